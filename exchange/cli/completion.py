"""``exchange completion SHELL``: the shell code that gives ``exchange`` tab completion.

argcomplete reads the completions off the argparse parser itself, so every
command and option completes without a list kept by hand.
"""

from __future__ import annotations

import argparse

from argcomplete.shell_integration import shellcode

from exchange.cli.options import Commands

__all__ = ["register"]

SHELLS = ("bash", "zsh", "fish")


def register(commands: Commands) -> None:
    completion = commands.add_parser(
        "completion", help="print shell code for tab completion",
        description='Tab completion for exchange. bash or zsh: eval "$(exchange completion bash)" '
                    "in ~/.bashrc (or zsh and ~/.zshrc); fish: exchange completion fish | source.",
    )
    completion.add_argument("shell", metavar="SHELL", choices=SHELLS, help=", ".join(SHELLS))
    completion.set_defaults(handler=run_completion)


def run_completion(args: argparse.Namespace) -> int:
    print(shellcode(["exchange"], shell=args.shell), end="")
    return 0
