"""Everyday CLI habits, each through the real command (``main``, or the command in a process):
ids by unique prefix, options before or after the command, --version, shell completion, the
default profile, --format on every listing, get --json back into revise, export to stdout and
by format, observable types with a suggestion, progress bars, and a failed sync's one line.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import tomli_w

from exchange.cli.main import main
from exchange.records.normalize import OBSERVABLE_TYPES
from exchange.v1 import records_pb2, submission_pb2
from tests.federation import Federation, UserClient, draft
from tests.fill import fill
from tests.test_cli_sync import write_config

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "nodes" / "JPN-NPA" / "samples" / "sns-approach.json"
COMMAND = [sys.executable, "-m", "exchange.cli.main"]
USAGE, FAILURE = 2, 1
# Two ids that share their first 8 characters (what a table shows), and one that does not.
TWINS = ("abcd1234-0000-4000-8000-000000000001", "abcd1234-0000-4000-8000-000000000002")
SINGLE = "ef012345-0000-4000-8000-000000000003"


def profile(federation: Federation, agency: str = "JPN-NPA", handle: str = "suzuki") -> str:
    return str(federation.pki_dir / agency / "users" / f"{handle}.profile.toml")


def one_error_line(err: str) -> str:
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("exchange: "), err
    return err[len("exchange: ") : -1]


def exchange(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *argv], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env=env, check=False)


# --- exchange --version, completion ---------------------------------------------------------


def test_version_names_the_installed_version() -> None:
    done = exchange("--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"exchange {metadata.version('exchange')}\n", "")


def test_completion_prints_shell_code_and_the_command_completes_its_own_words(tmp_path: Path) -> None:
    done = exchange("completion", "bash")
    assert done.returncode == 0 and "complete " in done.stdout and "exchange" in done.stdout
    assert exchange("completion", "tcsh").returncode == USAGE
    # bash accepts the code and registers the completion for `exchange`.
    bash = subprocess.run(["bash", "-c", 'eval "$(cat)"; complete -p exchange'], input=done.stdout,
                          capture_output=True, text=True, timeout=30, check=False)
    assert bash.returncode == 0 and bash.stdout.strip().endswith(" exchange"), bash.stderr

    # What the shell code does on Tab: run the command with argcomplete's variables set.
    answer = tmp_path / "completions"
    env = {**os.environ, "_ARGCOMPLETE": "1", "COMP_LINE": "exchange wat", "COMP_POINT": "12",
           "_ARGCOMPLETE_STDOUT_FILENAME": str(answer)}
    assert exchange(env=env).returncode == 0
    assert [word.strip() for word in answer.read_text(encoding="utf-8").split("\013")] == ["watch"]
    env.update(COMP_LINE="exchange export --fo", COMP_POINT="20")
    assert exchange(env=env).returncode == 0
    assert "--format" in [word.strip() for word in answer.read_text(encoding="utf-8").split("\013")]


# --- global options, the default profile -----------------------------------------------------


def test_connection_options_work_before_or_after_the_command(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    federation.start_node("JPN-NPA", tmp_path / "jpn")
    fill(federation.nodes[0].store, federation.manifest, federation.pki_dir, "JPN-NPA", 1, record_ids=[SINGLE])
    for argv in (
        ["--profile", profile(federation), "get", SINGLE[:8], "--format", "json"],
        ["get", SINGLE[:8], "--format", "json", "--profile", profile(federation)],
        ["--timeout", "20", "get", SINGLE[:8], "--profile", profile(federation), "--format", "json"],
    ):
        assert main([a for a in argv if a not in ("--format", "json")] + ["--json"]) == 0, argv
        assert json.loads(capsys.readouterr().out)["ref"]["record_id"] == SINGLE
    # A value given before the command is not reset by the command's own defaults.
    missing = tmp_path / "missing.toml"
    assert main(["--profile", str(missing), "query"]) == USAGE
    assert str(missing) in one_error_line(capsys.readouterr().err)


def test_the_default_profile_comes_after_the_flag_and_the_environment(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    federation.start_node("JPN-NPA", tmp_path / "jpn")
    config_home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    default = config_home / "exchange" / "profile.toml"
    assert main(["query"]) == USAGE  # none yet: the error says where one would be read from
    assert f"or write {default}" in one_error_line(capsys.readouterr().err)

    # The profile pki init wrote, with its relative paths made absolute, as the default.
    source = Path(profile(federation))
    data = tomllib.loads(source.read_text(encoding="utf-8"))
    data.update({k: str(source.parent / data[k]) for k in ("cert", "key", "ca")})
    default.parent.mkdir(parents=True)
    default.write_text(tomli_w.dumps(data), encoding="utf-8")
    assert main(["query", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []

    # $EXCHANGE_PROFILE comes before it, and --profile before both.
    elsewhere = tmp_path / "env-profile.toml"
    monkeypatch.setenv("EXCHANGE_PROFILE", str(elsewhere))
    assert main(["query"]) == USAGE
    assert str(elsewhere) in one_error_line(capsys.readouterr().err)
    assert main(["query", "--json", "--profile", str(default)]) == 0
    capsys.readouterr()

    # --help states the order.
    assert main(["--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"the first of --profile FILE, $EXCHANGE_PROFILE, and {default} (if it exists)" in help_text


# --- ids: the whole id or a unique prefix ------------------------------------------------------


def test_the_id_a_table_shows_or_any_unique_prefix_names_a_record(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 3, record_ids=[*TWINS, SINGLE])
    me = ["--profile", profile(federation)]
    assert main(["query", *me]) == 0
    shown = capsys.readouterr().out
    assert SINGLE[:8] in shown and SINGLE not in shown  # the table shows 8 characters

    for given in (SINGLE[:8], f"JPN-NPA/{SINGLE[:8]}", SINGLE[:4], SINGLE.upper()[:8], SINGLE, f"JPN-NPA/{SINGLE}"):
        assert main(["get", given, *me]) == 0, given
        assert f"Record:        JPN-NPA/{SINGLE}" in capsys.readouterr().out
    assert main(["disclosures", SINGLE[:8], *me]) == 0
    assert f"Record JPN-NPA/{SINGLE} (current version 1)" in capsys.readouterr().out

    assert main(["get", TWINS[0][:8], *me]) == USAGE
    error = one_error_line(capsys.readouterr().err)
    assert error.startswith(f"record: '{TWINS[0][:8]}' is ambiguous: it matches 2 records (")
    assert f"JPN-NPA/{TWINS[0][:12]}" in error and "give more of the id" in error
    assert main(["get", TWINS[1], *me]) == 0  # a whole id without its originator
    assert f"JPN-NPA/{TWINS[1]}" in capsys.readouterr().out

    assert main(["get", "abc", *me]) == USAGE
    assert one_error_line(capsys.readouterr().err) == (
        "argument [ORIGINATOR/]ID: id prefix 'abc' is too short: give at least 4 characters "
        "(see `exchange get --help`)"
    )
    assert main(["get", "0000aaaa", *me]) == FAILURE
    assert one_error_line(capsys.readouterr().err) == "record 0000aaaa not found"


# --- get --json back into revise --------------------------------------------------------------


def test_get_json_edited_is_a_revision_that_revise_takes_back(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    federation.start_node("JPN-NPA", tmp_path / "jpn")
    analyst = ["--profile", profile(federation, handle="sato")]
    assert main(["submit", str(SAMPLE), "--json", *analyst]) == 0
    ref = json.loads(capsys.readouterr().out)["ref"]
    name = f"{ref['originator']}/{ref['record_id']}"

    assert main(["get", ref["record_id"][:8], "--json", *analyst]) == 0
    record = json.loads(capsys.readouterr().out)
    record["content"]["title"] = "編集した題名"
    record["content"]["tags"] = [*record["content"].get("tags", []), "edited"]
    edited = tmp_path / "record.json"
    edited.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
    assert main(["revise", str(edited), *analyst]) == 0
    assert capsys.readouterr().out == f"revised {name} version 2\n"

    assert main(["get", name, "--json", *analyst]) == 0
    now = json.loads(capsys.readouterr().out)
    assert now["version"] == 2 and now["content"]["title"] == "編集した題名" and "edited" in now["content"]["tags"]
    assert {k: v for k, v in now["content"].items() if k not in ("title", "tags")} == {
        k: v for k, v in record["content"].items() if k not in ("title", "tags")
    }

    # The same file again names version 1, no longer current: refused, nothing changes.
    assert main(["revise", str(edited), *analyst]) == FAILURE
    assert "current" in one_error_line(capsys.readouterr().err)
    # A draft still takes REF and --base-version, with options between them.
    assert main(["revise", ref["record_id"][:8], "--base-version", "2", str(SAMPLE), *analyst]) == 0
    assert capsys.readouterr().out == f"revised {name} version 3\n"
    assert main(["revise", str(SAMPLE), *analyst]) == USAGE
    assert "name the record" in one_error_line(capsys.readouterr().err)


# --- --format on every listing ---------------------------------------------------------------


def _check_formats(argv: list[str], capsys: pytest.CaptureFixture[str], columns: tuple[str, ...]) -> list[object]:
    """Run a listing in json, jsonl and csv: the same rows in each; returns the JSON objects."""
    assert main([*argv, "--format", "json"]) == 0
    objects = json.loads(capsys.readouterr().out)
    assert isinstance(objects, list)
    assert main([*argv, "--format", "jsonl"]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == objects
    assert main([*argv, "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert tuple(rows[0]) == columns and len(rows) == len(objects) + 1
    return list(objects)


def test_every_listing_command_takes_format(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from exchange.cli.export import EXPORT_COLUMNS
    from exchange.cli.query import RECORD_COLUMNS

    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    marking = records_pb2.Marking(classification="CONFIDENTIAL", releasable_to=["JPN-NPA"], tlp="AMBER")
    observable = records_pb2.Observable(type="company_name", value="=HYPERLINK(1) Trading")
    analyst = UserClient.of(federation.user_channel(usa, "USA-DTSF", "jmiller"))
    ref = analyst.submission.Submit(submission_pb2.SubmitRequest(
        draft=draft(title="=cmd|' /C calc'!A0", marking=marking, observables=[observable])), timeout=10).receipt.ref
    jpn.puller.pull("USA-DTSF")
    me = ["--profile", profile(federation)]
    assert main(["watch", "add", "--type", "company_name", observable.value, *me]) == 0
    capsys.readouterr()

    [record] = _check_formats(["query", "--from-partners", *me], capsys, RECORD_COLUMNS)
    assert isinstance(record, dict) and record["ref"]["record_id"] == ref.record_id
    assert main(["query", "--from-partners", "--format", "csv", *me]) == 0
    [_, row] = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert row[1] == ref.record_id and row[7] == "'=cmd|' /C calc'!A0"  # whole id; no formula for a spreadsheet
    [entry] = _check_formats(["watch", "list", *me], capsys, ("id", "type", "value", "keys", "created_at"))
    assert isinstance(entry, dict) and entry["value"] == observable.value
    [hit] = _check_formats(["watch", "hits", *me], capsys, (*RECORD_COLUMNS, "received_at", "watch_ids"))
    assert isinstance(hit, dict) and hit["watch_ids"] == [1]

    # disclosures: json keeps its one object; jsonl and csv list the disclosures.
    usa_liaison = ["--profile", profile(federation, "USA-DTSF", "rchen")]
    assert main(["disclosures", ref.record_id[:8], "--format", "json", *usa_liaison]) == 0
    assert [d["partner"] for d in json.loads(capsys.readouterr().out)["disclosures"]] == ["JPN-NPA"]
    assert main(["disclosures", ref.record_id[:8], "--format", "jsonl", *usa_liaison]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["record"] == f"USA-DTSF/{ref.record_id}"
    assert main(["disclosures", ref.record_id[:8], "--format", "csv", *usa_liaison]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["record", "partner", "version", "at", "withdrawal", "audit_seq"] and rows[1][1] == "JPN-NPA"

    config = write_config(federation, tmp_path / "jpn.toml", "JPN-NPA", tmp_path / "jpn")
    _check_formats(["events", "--config", str(config)], capsys, ("id", "at", "kind", "peer", "detail"))

    # export's formats are jsonl and csv (see the export test); the csv has the record columns too.
    assert main(["export", "--out", "-", "--format", "csv", "--from-partners", *me]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert tuple(rows[0]) == EXPORT_COLUMNS and rows[1][1] == ref.record_id


# --- export --------------------------------------------------------------------------------


def test_export_writes_to_stdout_and_refuses_a_file_name_of_another_format(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 3)
    me = ["--profile", profile(federation)]
    assert main(["export", "--out", "-", *me]) == 0
    out, err = capsys.readouterr()
    assert len([json.loads(line) for line in out.splitlines()]) == 3  # stdout holds the records alone
    assert "exported 3 records to standard output" in err and err.startswith("==== CONFIDENTIAL")

    for name, fmt in (("x.csv", []), ("x.jsonl", ["--format", "csv"]), ("x.txt", [])):
        assert main(["export", "--out", str(tmp_path / name), *fmt, *me]) == USAGE
        error = one_error_line(capsys.readouterr().err)
        assert error.startswith(f"--out: {tmp_path / name} does not end in "), error
        assert not (tmp_path / name).exists()

    out_csv = tmp_path / "x.csv"
    assert main(["export", "--out", str(out_csv), "--format", "csv", *me]) == 0
    assert f"exported 3 records to {out_csv}" in capsys.readouterr().out
    assert len(list(csv.reader(io.StringIO(out_csv.read_text(encoding="utf-8"))))) == 4
    assert (out_csv.stat().st_mode & 0o777) == 0o600


# --- observable types ----------------------------------------------------------------------


def test_observable_types_are_listed_in_help_and_a_typo_gets_a_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["watch", "add"], ["query"], ["export"]):
        assert main([*command, "--help"]) == 0
        listed = capsys.readouterr().out
        assert all(name in listed for name in OBSERVABLE_TYPES), command
    assert main(["watch", "add", "--type", "domian", "example.com"]) == USAGE
    assert "unknown observable type 'domian'; did you mean domain?" in one_error_line(capsys.readouterr().err)
    assert main(["query", "--observable", "emial=a@example.com"]) == USAGE
    assert one_error_line(capsys.readouterr().err) == (
        "--observable: unknown observable type 'emial'; did you mean email?"
    )


# --- progress bars -------------------------------------------------------------------------


def test_long_operations_draw_a_progress_bar_only_on_a_terminal_or_when_asked(
    federation: Federation, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 20)
    me = ["--profile", profile(federation)]
    assert main(["export", "--out", str(tmp_path / "a.jsonl"), *me]) == 0
    assert capfd.readouterr().err == ""  # stderr is not a terminal here
    assert main(["export", "--out", str(tmp_path / "b.jsonl"), "--progress", *me]) == 0
    err = capfd.readouterr().err
    assert "exporting" in err and "20 records" in err and "records/s" in err and "elapsed" in err

    sample = json.loads(SAMPLE.read_text(encoding="utf-8"))
    bulk = tmp_path / "drafts.jsonl"
    bulk.write_text("".join(json.dumps({**sample, "reference": f"P-{i}"}) + "\n" for i in range(3)),
                    encoding="utf-8")
    analyst = ["--profile", profile(federation, handle="sato")]
    assert main(["submit", "--bulk", str(bulk), *analyst]) == 0
    assert capfd.readouterr().err == ""
    assert main(["submit", "--bulk", str(bulk), "--progress", *analyst]) == 0
    err = capfd.readouterr().err
    assert "submitting" in err and "3/3" in err and "lines/s" in err and "ETA" in err


def test_on_a_real_terminal_the_bar_appears_unasked(federation: Federation, tmp_path: Path) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 5)
    parent, child = pty.openpty()  # the command's stderr is a terminal; its stdout a pipe
    with subprocess.Popen([*COMMAND, "export", "--out", "-", "--profile", profile(federation)],
                          stdout=subprocess.PIPE, stderr=child, cwd=REPO) as process:
        os.close(child)
        shown = b""
        while True:
            try:
                chunk = os.read(parent, 65536)
            except OSError:  # EIO: the command exited and the terminal closed
                break
            if not chunk:
                break
            shown += chunk
        out, _ = process.communicate(timeout=60)
    os.close(parent)
    assert process.returncode == 0
    assert len(out.splitlines()) == 5  # the records, and nothing of the bar, on stdout
    text = shown.decode("utf-8", "replace")
    assert "exporting" in text and "records/s" in text and "exported 5 records to standard output" in text


def test_sync_draws_its_bar_when_asked_and_a_failed_sync_prints_one_error_line(
    federation: Federation, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 5,
         marking=records_pb2.Marking(classification="CONFIDENTIAL", releasable_to=["USA-DTSF"], tlp="AMBER"))
    config = write_config(federation, tmp_path / "usa.toml", "USA-DTSF", tmp_path / "usa")
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    capfd.readouterr()
    assert main(["sync", "--peer", "JPN-NPA", "--config", str(config), "--progress"]) == 0
    out, err = capfd.readouterr()
    assert out.startswith("pull from JPN-NPA: received 5, stored 5,")
    assert "pulling from JPN-NPA" in err and "entries/s" in err

    # KOR-KNPA's node is not running: no summary on stdout, one line on stderr, exit 1.
    assert main(["sync", "--peer", "KOR-KNPA", "--config", str(config), "--no-progress"]) == FAILURE
    out, err = capfd.readouterr()
    assert out == ""
    assert one_error_line(err).startswith("pull from KOR-KNPA failed: UNAVAILABLE: ")
