"""Observable normalisation: known answers, rejections, and stability properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.errors import InvalidInput
from exchange.records.normalize import OBSERVABLE_TYPES, normalize, normalize_any


def fullwidth(text: str) -> str:
    """The full-width form Japanese and Korean input methods produce for ASCII."""
    return "".join(
        "\u3000" if ch == " " else chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text
    )


def rejection(obs_type: str, value: str, field: str = "value") -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        normalize(obs_type, value, field)
    return info.value


def test_types_are_the_agreed_sixteen() -> None:
    assert len(OBSERVABLE_TYPES) == 16
    assert {"email", "phone", "company_name", "vessel_imo", "eccn"} <= OBSERVABLE_TYPES


# --- names ------------------------------------------------------------------


def test_fullwidth_and_halfwidth_company_names_are_equal() -> None:
    assert fullwidth("ABC") == "\uff21\uff22\uff23"
    wide = normalize("company_name", fullwidth("ABC") + "商事\u3000株式会社")
    narrow = normalize("company_name", "abc商事 株式会社")
    assert wide == narrow == "abc商事 株式会社"


def test_halfwidth_katakana_folds_to_standard_katakana() -> None:
    assert normalize("person_name", "ﾄｳｷｮｳ") == normalize("person_name", "トウキョウ") == "トウキョウ"
    # Voiced half-width kana are two code points that NFKC composes into one.
    assert normalize("address", "ｶﾞｽ") == "ガス"


def test_names_collapse_whitespace_and_casefold() -> None:
    assert normalize("person_name", "  John\t\u3000SMITH \n") == "john smith"
    assert normalize("address", "Straße 1") == "strasse 1"


def test_platform_handle_drops_one_at_and_refuses_spaces() -> None:
    assert normalize("platform_handle", "@SomeUser") == "someuser"
    assert normalize("platform_handle", fullwidth("@SomeUser")) == "someuser"
    assert "spaces" in rejection("platform_handle", "@some user").problem
    assert "more than one" in rejection("platform_handle", "@@someuser").problem
    rejection("platform_handle", "@")


# --- e-mail, domain, URL, IP ------------------------------------------------


def test_email_capitals_and_lower_case_are_equal() -> None:
    assert normalize("email", "John.Doe@Example.COM") == normalize("email", "john.doe@example.com")
    assert normalize("email", fullwidth("John.Doe@Example.com")) == "john.doe@example.com"


def test_email_domain_is_idna_encoded() -> None:
    assert normalize("email", "Info@例え.JP") == "info@xn--r8jz45g.jp"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("no-at-sign.example.com", "exactly one @"),
        ("a@b@example.com", "exactly one @"),
        ("@example.com", "before and after"),
        ("someone@", "before and after"),
        ("some one@example.com", "spaces"),
        ("someone@exa_mple.com", "invalid domain"),
    ],
)
def test_bad_emails_are_rejected(value: str, words: str) -> None:
    assert words in rejection("email", value).problem


def test_domain_fullwidth_and_idn() -> None:
    assert normalize("domain", fullwidth("EXAMPLE.com")) == "example.com"
    assert normalize("domain", "例え.jp") == "xn--r8jz45g.jp"
    assert normalize("domain", "xn--r8jz45g.jp") == "xn--r8jz45g.jp"
    assert normalize("domain", "Example.com.") == "example.com"
    # U+3002 is only mapped to "." by UTS #46, after the trailing-dot check.
    assert normalize("domain", "example.com\u3002") == "example.com"


@pytest.mark.parametrize("value", ["exa mple.com", "a..com", "-a.com", "ex!ample.com", "."])
def test_bad_domains_are_rejected(value: str) -> None:
    assert "domain" in rejection("domain", value).problem


def test_url_lowercases_scheme_and_host_only() -> None:
    assert normalize("url", "HTTPS://Example.COM/Path?Q=A#Frag") == "https://example.com/Path?Q=A#Frag"
    assert normalize("url", "http://User@例え.JP:8080/a/b?x=1") == "http://User@xn--r8jz45g.jp:8080/a/b?x=1"


def test_url_trailing_slash_on_empty_path_is_dropped() -> None:
    assert normalize("url", "https://example.com/") == "https://example.com"
    assert normalize("url", "https://example.com/?q=1") == "https://example.com?q=1"
    assert normalize("url", "https://example.com/a/") == "https://example.com/a/"


def test_url_ip_hosts() -> None:
    assert normalize("url", "http://[2001:DB8:0::1]:443/x") == "http://[2001:db8::1]:443/x"
    assert normalize("url", "ftp://192.0.2.1/pub") == "ftp://192.0.2.1/pub"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("example.com/path", "must start with"),
        ("javascript:alert(1)", "must start with"),
        ("mailto:a@example.com", "must start with"),
        ("http://", "needs a host"),
        ("http://example.com:99999/", "port"),
        ("http://example.com:x/", "port"),
        ("http://exa mple.com/", "spaces"),
        ("http://exa_mple.com/", "host"),
        ("http://[::g]/", "IPv6"),
    ],
)
def test_bad_urls_are_rejected(value: str, words: str) -> None:
    assert words in rejection("url", value).problem


def test_ip_compressed() -> None:
    assert normalize("ip", "2001:0DB8:0000::0001") == "2001:db8::1"
    assert normalize("ip", " 192.0.2.1 ") == "192.0.2.1"
    assert "IPv4 or IPv6" in rejection("ip", "192.0.2.256").problem


# --- phone ------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["+81 3-1234-5678", "+81-3-1234-5678", "+81 (3) 1234 5678", "+81312345678", fullwidth("+81312345678")],
)
def test_phone_formats_are_equal(value: str) -> None:
    assert normalize("phone", value) == "+81312345678"


def test_phone_without_country_code_is_rejected() -> None:
    error = rejection("phone", "03-1234-5678", field="observables[2].value")
    assert "country code" in error.problem
    assert error.field == "observables[2].value"
    assert str(error).startswith("observables[2].value: ")


def test_impossible_phone_numbers_are_rejected() -> None:
    rejection("phone", "+81 3")
    rejection("phone", "+1 202 555 01234567")
    assert "country code" in rejection("phone", "+999 1234 5678").problem
    rejection("phone", "call me")


# --- codes ------------------------------------------------------------------


def test_hs_code_drops_separators() -> None:
    assert normalize("hs_code", "8542.31") == "854231"
    assert normalize("hs_code", "8542 31-00") == "85423100"
    assert normalize("hs_code", fullwidth("8542.31")) == "854231"


@pytest.mark.parametrize("value", ["854", "85423100001", "8542.3a", "...."])
def test_bad_hs_codes_are_rejected(value: str) -> None:
    assert "4 to 10 digits" in rejection("hs_code", value).problem


def test_eccn_upper_case_without_spaces() -> None:
    assert normalize("eccn", "3a001.a.2") == "3A001.A.2"
    assert normalize("eccn", " 3A001. a.2 ") == "3A001.A.2"
    assert normalize("eccn", "ear99") == "EAR99"
    rejection("eccn", "3A001..a")
    rejection("eccn", "3A001/a")


def test_imo_check_digit() -> None:
    # 9*7 + 0*6 + 7*5 + 4*4 + 7*3 + 2*2 = 139 -> check digit 9.
    assert normalize("vessel_imo", "IMO 9074729") == "9074729"
    assert normalize("vessel_imo", "imo9074729") == "9074729"
    assert normalize("vessel_imo", "9074729") == "9074729"
    assert "check digit" in rejection("vessel_imo", "IMO 9074728").problem
    assert "7 digits" in rejection("vessel_imo", "IMO 907472").problem
    assert "7 digits" in rejection("vessel_imo", "IMO 90747290").problem


def test_wallet_case_rules() -> None:
    checksummed = "0x52908400098527886E0F7030069857D2E4169EE7"
    assert normalize("wallet", checksummed) == checksummed.lower()
    bech32 = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
    assert normalize("wallet", bech32.upper()) == bech32
    base58 = "1BoatSLRHtKNngkdXEeobR76b53LETtpyT"
    assert normalize("wallet", base58) == base58
    assert normalize("wallet", base58.lower()) != base58
    assert normalize("wallet", " 1BoatSLRH tKNngkdXEeobR76b53LETtpyT ") == base58
    assert "hexadecimal" in rejection("wallet", "0xZZ").problem
    rejection("wallet", "1Boat-SLRH")


@pytest.mark.parametrize("obs_type", ["bank_account", "company_registration", "identity_document"])
def test_codes_upper_case_without_spaces_or_hyphens(obs_type: str) -> None:
    assert normalize(obs_type, "ab-12 34\u2010cd") == "AB1234CD"
    assert normalize(obs_type, fullwidth("ab-12 34")) == "AB1234"
    rejection(obs_type, " - - ")


# --- common rules -----------------------------------------------------------


def test_unknown_type_is_rejected_naming_the_field() -> None:
    error = rejection("telephone", "+81312345678", field="observables[0].type")
    assert error.field == "observables[0].type"
    assert "unknown observable type 'telephone'" in error.problem


@pytest.mark.parametrize("obs_type", sorted(OBSERVABLE_TYPES))
def test_empty_and_oversized_values_are_rejected(obs_type: str) -> None:
    assert "empty" in rejection(obs_type, " \u3000\t").problem
    assert "1,000 characters" in rejection(obs_type, "1" * 1001).problem


def test_normalize_any_lists_every_valid_type() -> None:
    keys = normalize_any("+81 3-1234-5678")
    assert keys["phone"] == "+81312345678"
    assert keys["company_name"] == "+81 3-1234-5678"
    assert "domain" not in keys and "email" not in keys and "ip" not in keys

    keys = normalize_any("Example.COM")
    assert keys["domain"] == "example.com"
    assert "phone" not in keys and "url" not in keys


def test_normalize_any_never_raises() -> None:
    assert normalize_any("") == {}
    assert normalize_any("x" * 1001) == {}


# --- properties -------------------------------------------------------------

# Alphabets agencies actually type, in both widths, plus awkward whitespace.
_NAME_ALPHABET = st.sampled_from(
    list("ABCabcßİ0129 -.&'()")
    + list(fullwidth("ABCabc019-"))
    + list("株式会社商事トウキョウｶﾞﾄｳｷｮｳ한국무역\u3000\t")
)


@given(st.one_of(st.text(), st.text(_NAME_ALPHABET)))
def test_names_are_stable(value: str) -> None:
    for obs_type in ("company_name", "person_name", "address", "platform_handle"):
        try:
            key = normalize(obs_type, value)
        except InvalidInput:
            continue
        assert normalize(obs_type, key) == key


_LOCAL = st.text(st.sampled_from(list("abcXYZ09._+-ß" + fullwidth("Ab1"))), min_size=1, max_size=20)
_LABEL = st.text(
    st.sampled_from(list("abcXYZ09" + fullwidth("aB") + "例え日本한국")), min_size=1, max_size=12
)


_TLD = st.sampled_from(["com", "JP", fullwidth("kr")])


@given(_LOCAL, st.lists(_LABEL, min_size=1, max_size=3), _TLD)
def test_emails_are_stable_and_case_insensitive(local: str, labels: list[str], tld: str) -> None:
    value = f"{local}@{'.'.join([*labels, tld])}"
    key = normalize("email", value)
    assert normalize("email", key) == key
    assert normalize("email", value.upper()) == normalize("email", value.lower())
    assert key.rpartition("@")[2].isascii()


@given(st.text(max_size=30))
def test_every_type_is_stable(value: str) -> None:
    for obs_type, key in normalize_any(value).items():
        assert normalize(obs_type, key) == key


def test_removing_separators_does_not_leave_uncomposed_marks() -> None:
    # NFKC turns the spacing cedilla into space + U+0327; once the space goes,
    # C + U+0327 must be composed or the key would change on re-normalising.
    key = normalize("bank_account", "C\u00b8")
    assert key == "\u00c7"
    assert normalize("bank_account", key) == key


@given(st.text(max_size=40))
def test_normalize_any_agrees_with_normalize(value: str) -> None:
    keys = normalize_any(value)
    for obs_type in OBSERVABLE_TYPES:
        if obs_type in keys:
            assert normalize(obs_type, value) == keys[obs_type]
        else:
            with pytest.raises(InvalidInput):
                normalize(obs_type, value)
