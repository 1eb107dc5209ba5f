"""The Chinese catalogue is complete and its placeholders match the English.

The messages are extracted from the code and templates as they are now (the same
mapping and keywords as ``make translations``), so a string added anywhere fails here
until it is translated: run ``make translations``, fill the new entries in
``portal/translations/zh_Hans_CN/LC_MESSAGES/messages.po``, run the tests again.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cache
from io import BytesIO
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po

from config import Config

ROOT = Path(__file__).resolve().parents[2]
TRANSLATIONS = ROOT / "portal" / "translations"
KEYWORDS = {**DEFAULT_KEYWORDS, "_l": None, "lazy_gettext": None}
# Every language the portal offers besides English has a catalogue that must be complete.
TRANSLATED_LOCALES = [locale for locale in Config.SUPPORTED_LOCALES if locale != "en"]

# %(name)s, %s, %d… (not %%); {name} for str.format and the upload page's script; {{ name }}
# in the automatic messages' templates.
PERCENT = re.compile(r"%(?:\((\w+)\))?[-#0 +]*\d*(?:\.\d+)?([diouxXeEfFgGcrs])")
BRACES = re.compile(r"(?<!\{)\{(\w+)\}(?!\})")
JINJA = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")


def placeholders(text: str) -> Counter:
    found: Counter = Counter()
    found.update(f"%({name}){kind}" for name, kind in PERCENT.findall(text.replace("%%", "")))
    found.update(f"{{{name}}}" for name in BRACES.findall(text))
    found.update(f"{{{{ {name} }}}}" for name in JINJA.findall(text))
    return found


def _searched(dirpath: str) -> bool:
    """Every folder but hidden ones and caches: Babel's default also skips ``_partials``."""
    name = Path(dirpath).name
    return not name.startswith(".") and name != "__pycache__"


@cache
def extracted() -> Catalog:
    with open(ROOT / "babel.cfg", encoding="utf-8") as fileobj:
        method_map, options_map = parse_mapping_cfg(fileobj, filename="babel.cfg")
    catalog = Catalog()
    for _filename, lineno, message, _comments, context in extract_from_dir(
        str(ROOT), method_map, options_map, keywords=KEYWORDS, directory_filter=_searched
    ):
        catalog.add(message, None, [(_filename, lineno)], context=context)
    return catalog


def load(locale: str) -> Catalog:
    with open(TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po", "rb") as fileobj:
        return read_po(fileobj, locale=locale)


def key(message) -> str:
    return message.id if isinstance(message.id, str) else message.id[0]


def test_placeholders_are_recognised():
    assert placeholders("%(n)d of %(total)s, 100%% done") == Counter({"%(n)d": 1, "%(total)s": 1})
    assert placeholders("Uploading {done} of {total}") == Counter({"{done}": 1, "{total}": 1})
    assert placeholders("Hi {{ partner.name }}") == Counter({"{{ partner.name }}": 1})
    assert placeholders("%(n)s") != placeholders("%(n)d")


def test_the_extraction_finds_the_portal_strings():
    ids = {key(m) for m in extracted() if m.id}
    # From Python, a page, an e-mail, and a partial in a folder whose name starts with "_".
    assert {"Settings saved.", "Sign in", "Hello %(name)s,", "Sign out", "Your money now"} <= ids
    assert len(ids) > 1000


def translation_problems(wanted: Catalog, translated: Catalog) -> list[str]:
    """Every message of ``wanted`` that ``translated`` lacks, leaves empty or marks fuzzy."""
    problems = []
    for message in wanted:
        if not message.id:
            continue
        entry = translated.get(message.id, context=message.context)
        if entry is None:
            problems.append(f"missing: {key(message)!r}")
        elif entry.fuzzy:
            problems.append(f"fuzzy: {key(message)!r}")
        else:
            strings = entry.string if isinstance(entry.string, tuple) else (entry.string,)
            if not all(s and s.strip() for s in strings):
                problems.append(f"untranslated: {key(message)!r}")
    return problems


def placeholder_problems(translated: Catalog) -> list[str]:
    """Every translation whose placeholders differ from its English, or with a lone ``%``."""
    problems = []
    for entry in translated:
        if not entry.id or not entry.string:
            continue
        sources = entry.id if isinstance(entry.id, tuple) else (entry.id,)
        strings = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        wanted = placeholders(sources[-1])
        for string in strings:
            if string and placeholders(string) != wanted:
                problems.append(f"{key(entry)!r}: {sorted(placeholders(string))} != {sorted(wanted)}")
            # A lone % in a string that is %-formatted breaks it at run time.
            if string and entry.python_format and PERCENT.sub("", string.replace("%%", "")).count("%"):
                problems.append(f"{key(entry)!r}: a lone % (write %%)")
    return problems


@pytest.mark.parametrize("locale", TRANSLATED_LOCALES)
def test_every_message_is_translated(locale):
    problems = translation_problems(extracted(), load(locale))
    assert not problems, (
        f"{len(problems)} messages need a {locale} translation (make translations, then edit the "
        "catalogue):\n" + "\n".join(problems)
    )


@pytest.mark.parametrize("locale", TRANSLATED_LOCALES)
def test_placeholders_match_the_english(locale):
    problems = placeholder_problems(load(locale))
    assert not problems, "\n".join(problems)


# The two checks above on a catalogue made to fail them: each fault is found, and a clean
# catalogue passes (a check that cannot fail would let a broken catalogue through).
_CRAFTED = r"""
msgid ""
msgstr ""
"Content-Type: text/plain; charset=UTF-8\n"
"Plural-Forms: nplurals=1; plural=0;\n"

msgid "Sign in"
msgstr "登录"

#, fuzzy
msgid "Sign out"
msgstr "退出登录"

msgid "Settings saved."
msgstr ""

#, python-format
msgid "Hello %(name)s,"
msgstr "您好，%(nom)s，"

#, python-format
msgid "%(n)d of %(total)s"
msgstr "%(n)s / %(total)s"

#, python-format
msgid "%(rate)s of each sale"
msgstr "每笔订单的 %(rate)s 即 100%"

msgid "Uploading {done} of {total}"
msgstr "正在上传 {done}"

msgid "Hi {{ partner.name }}"
msgstr "您好 {{ partner }}"

#, python-format
msgid "%(num)d line"
msgid_plural "%(num)d lines"
msgstr[0] "%(count)d 条"
"""


def _crafted() -> Catalog:
    return read_po(BytesIO(_CRAFTED.encode()), locale="zh_Hans_CN")


def test_the_translation_check_finds_missing_fuzzy_and_empty_entries():
    wanted = Catalog()
    for message in ("Sign in", "Sign out", "Settings saved.", "Your money now"):
        wanted.add(message)
    assert translation_problems(wanted, _crafted()) == [
        "fuzzy: 'Sign out'",
        "untranslated: 'Settings saved.'",
        "missing: 'Your money now'",
    ]
    clean = Catalog()
    clean.add("Sign in")
    assert translation_problems(clean, _crafted()) == []


def test_the_placeholder_check_finds_every_mismatch():
    problems = placeholder_problems(_crafted())
    found = {problem.split(":")[0] for problem in problems}
    assert found == {
        "'Hello %(name)s,'",  # renamed
        "'%(n)d of %(total)s'",  # %d became %s
        "'%(rate)s of each sale'",  # a lone %
        "'Uploading {done} of {total}'",  # one left out
        "'Hi {{ partner.name }}'",  # Jinja name changed
        "'%(num)d line'",  # the plural's placeholder renamed
    }, problems
    assert not [p for p in problems if "Sign in" in p]


@pytest.mark.parametrize("locale", TRANSLATED_LOCALES)
def test_the_catalogue_has_no_obsolete_duplicates_or_wrong_plurals(locale):
    translated = load(locale)
    assert translated.num_plurals == 1 if locale.startswith("zh") else translated.num_plurals >= 1
    for entry in translated:
        if entry.pluralizable and entry.string:
            assert len(entry.string) == translated.num_plurals, key(entry)


@pytest.mark.parametrize("locale", TRANSLATED_LOCALES)
def test_the_compiled_catalogue_is_current(locale):
    """`make install` compiles the .mo the app reads; a stale one would show old text."""
    mo_path = TRANSLATIONS / locale / "LC_MESSAGES" / "messages.mo"
    if not mo_path.exists():
        pytest.fail(f"{mo_path} is missing: run `make install` (it runs pybabel compile)")
    with open(mo_path, "rb") as fileobj:
        compiled = {key(m): m.string for m in read_mo(fileobj) if m.id}
    expected = BytesIO()
    write_mo(expected, load(locale))
    expected.seek(0)
    wanted = {key(m): m.string for m in read_mo(expected) if m.id}
    assert compiled == wanted, f"{mo_path} is older than its .po: run `make install`"


def forbidden_terms(glossary: str) -> dict[str, str]:
    """{term the glossary rules out: the term to use} from its "never …" notes."""
    terms = {}
    for line in glossary.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3:
            continue
        for note in re.findall(r"never ([^;(|]+)", cells[2]):
            for term in note.split("/"):
                if re.search(r"[\u4e00-\u9fff]", term):
                    terms[term.strip()] = cells[1]
    return terms


def test_the_glossary_rules_out_terms():
    rows = "| partner | 推广伙伴 | never 合作伙伴 / 联盟会员 |\n| x | y | (冻结期 is the hold period) |"
    assert forbidden_terms(rows) == {"合作伙伴": "推广伙伴", "联盟会员": "推广伙伴"}


@pytest.mark.parametrize("locale", [locale for locale in TRANSLATED_LOCALES if locale.startswith("zh")])
def test_the_catalogue_keeps_the_glossary(locale):
    glossary = (TRANSLATIONS / locale / "GLOSSARY.md").read_text(encoding="utf-8")
    forbidden = forbidden_terms(glossary)
    assert len(forbidden) >= 10
    problems = []
    for entry in load(locale):
        strings = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        for term, instead in forbidden.items():
            if any(term in (string or "") for string in strings):
                problems.append(f"{key(entry)!r}: {term} (the glossary says {instead})")
    assert not problems, "\n".join(problems)
