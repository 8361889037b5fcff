"""The dashboard in English, 简体中文, Français and Português (Brasil): complete message
catalogues, compiled ones that match them, and the language each visitor gets."""

from __future__ import annotations

import gettext
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from consent import services
from consent.choices import Source
from consent.models import Subject
from tests.dashboard.conftest import signed_in_client
from tests.factories import TEST_ACTOR, SubjectFactory

LOCALES = ["fr", "pt_BR", "zh_Hans"]
LOCALE_DIR = Path(settings.BASE_DIR) / "locale"
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), text)


def read_po(path: Path) -> tuple[dict[str | tuple[str, int], str], list[str]]:
    """A .po file's catalogue as gettext would hold it ({msgid: msgstr}, plural forms
    keyed by (msgid, n)), and the msgids marked fuzzy."""
    catalogue: dict[str | tuple[str, int], str] = {}
    fuzzy: list[str] = []
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        flags = ""
        for line in block.splitlines():
            if line.startswith("#,"):
                flags += line
            elif line.startswith("#") or not line.strip():
                continue
            elif line.startswith('"'):
                assert key is not None
                fields[key] += _unescape("".join(_STRING.findall(line)))
            else:
                key, rest = line.split(" ", 1)
                fields[key] = _unescape("".join(_STRING.findall(rest)))
        if "msgid" not in fields:
            continue
        msgid = fields["msgid"]
        if "fuzzy" in flags:
            fuzzy.append(msgid)
        if "msgid_plural" in fields:
            for name, value in fields.items():
                if name.startswith("msgstr["):
                    catalogue[(msgid, int(name[7:-1]))] = value
        else:
            catalogue[msgid] = fields["msgstr"]
    return catalogue, fuzzy


@pytest.mark.parametrize("locale", LOCALES)
def test_every_message_is_translated(locale: str) -> None:
    catalogue, fuzzy = read_po(LOCALE_DIR / locale / "LC_MESSAGES" / "django.po")
    assert len(catalogue) > 200
    assert fuzzy == []
    untranslated = [k for k, v in catalogue.items() if k != "" and not v.strip()]
    assert untranslated == []


@pytest.mark.parametrize("locale", LOCALES)
def test_placeholders_survive_translation(locale: str) -> None:
    catalogue, _ = read_po(LOCALE_DIR / locale / "LC_MESSAGES" / "django.po")
    placeholder = re.compile(r"%\(\w+\)s")
    for key, value in catalogue.items():
        msgid = key[0] if isinstance(key, tuple) else key
        if msgid:
            assert sorted(placeholder.findall(value)) == sorted(placeholder.findall(msgid)), key


@pytest.mark.parametrize("locale", LOCALES)
def test_the_committed_mo_files_match_their_po_files(locale: str) -> None:
    folder = LOCALE_DIR / locale / "LC_MESSAGES"
    expected, _ = read_po(folder / "django.po")
    with (folder / "django.mo").open("rb") as mo:
        compiled = gettext.GNUTranslations(mo)
    actual = {
        (key if isinstance(key, str) else (key[0], key[1])): value
        for key, value in compiled._catalog.items()  # type: ignore[attr-defined]
    }
    # msgfmt leaves the creation date out of the header; every message must match.
    expected.pop("")
    actual.pop("")
    assert actual == expected, "run: python manage.py compilemessages"


# --- which language a visitor gets ---------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("language", "code", "heading"),
    [
        ("en-GB", "en", "Your choices"),
        ("zh-Hans", "zh-hans", "你的选择"),
        ("fr", "fr", "Vos choix"),
        ("pt-BR", "pt-br", "Suas escolhas"),
    ],
)
def test_the_dashboard_speaks_the_subjects_language(language: str, code: str, heading: str) -> None:
    subject = SubjectFactory.create(country="DE", language=language)
    response = signed_in_client(subject).get("/dashboard/")
    body = response.content.decode()
    assert f'<html lang="{code}">' in body
    assert f"<h1>{heading}</h1>" in body
    assert response["Content-Language"] == code


@pytest.mark.django_db
def test_accept_language_decides_when_the_subject_language_is_not_offered(db: None) -> None:
    subject = SubjectFactory.create(country="DE", language="de")
    client = signed_in_client(subject, HTTP_ACCEPT_LANGUAGE="pt-BR,pt;q=0.9")
    assert "<h1>Suas escolhas</h1>" in client.get("/dashboard/").content.decode()


@pytest.mark.django_db
def test_the_switcher_overrides_the_subjects_language(anna: Subject) -> None:
    client = signed_in_client(anna)
    response = client.post("/i18n/setlang/", {"language": "fr", "next": "/dashboard/history"})
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/history"
    body = client.get("/dashboard/").content.decode()
    assert "<h1>Vos choix</h1>" in body
    assert "Toujours activé : l\u2019app en a besoin pour fonctionner." in body


@pytest.mark.django_db
def test_a_page_before_sign_in_follows_accept_language(db: None) -> None:
    body = Client(HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9").get("/dashboard/signin")
    assert "登录你的隐私面板" in body.content.decode()


@pytest.mark.django_db
def test_dates_and_numbers_are_localised(anna: Subject) -> None:
    for i in range(1000):
        services.record_choice(
            external_id=anna.external_id,
            purpose_key="analytics",
            granted=i % 2 == 0,
            source=Source.USER_APP,
            actor=TEST_ACTOR,
        )
    client = signed_in_client(anna)
    client.post("/i18n/setlang/", {"language": "fr"})
    body = client.get("/dashboard/history").content.decode()
    months = "janvier février mars avril mai juin juillet août septembre octobre novembre décembre"
    assert any(month in body for month in months.split())
    assert "1\u202f00" in body or "1\xa00" in body  # 1 00x décisions, with French grouping
    client.post("/i18n/setlang/", {"language": "en"})
    assert "1,00" in client.get("/dashboard/history").content.decode()


@pytest.mark.django_db
def test_the_language_cookie_is_httponly_and_same_site(anna: Subject) -> None:
    response = signed_in_client(anna).post("/i18n/setlang/", {"language": "pt-br"})
    cookie = response.cookies[settings.LANGUAGE_COOKIE_NAME]
    assert cookie.value == "pt-br"
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
