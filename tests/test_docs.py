"""README.md and docs/ stay true to the code.

- every relative link and ``#anchor`` resolves (GitHub's heading slugs);
- every ``tools/…``, ``configs/…``, ``tests/…``, ``softpool3d/…`` or ``docs/…`` path named exists;
- every ``--flag`` given to a command (``python tools/x.py`` or ``softpool3d <subcommand>``) appears in
  that command's ``--help``, and every ``make`` target named is in the Makefile;
- a command's ``--config FILE`` loads with the ``key=value`` overrides it is shown with;
- every Python block preceded by ``<!-- runnable -->`` runs, in a fresh folder.

The ``--help`` of each command runs once, all of them in parallel. A command form is one entry of
``COMMAND_FORMS``: a pattern that finds it in a shell line and the argv that prints its help.
"""

from __future__ import annotations

import functools
import glob
import itertools
import os
import re
import subprocess
import sys
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]   # paths, commands and examples checked
LINKED = [*GUIDES, ROOT / "CHANGELOG.md"]                               # links and anchors checked

SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console", "text"}
RUNNABLE_MARK = "<!-- runnable -->"


# ---------------------------------------------------------------- reading markdown

@dataclass
class Block:
    """A fenced code block: its language, its text and the line its fence opens on."""
    language: str
    text: str
    line: int
    runnable: bool


def split_markdown(text: str) -> tuple[list[tuple[int, str]], list[Block]]:
    """The prose lines (number, text) outside fences, and the fenced blocks."""
    prose, blocks = [], []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^\s*(```+|~~~+)\s*([\w+-]*)", lines[i])
        if not fence:
            prose.append((i + 1, lines[i]))
            i += 1
            continue
        marker, language, start = fence.group(1), fence.group(2).lower(), i
        previous = next((line.strip() for line in reversed(lines[:start]) if line.strip()), "")
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(marker):
            body.append(lines[i])
            i += 1
        i += 1   # the closing fence
        blocks.append(Block(language, "\n".join(body), start + 1, previous == RUNNABLE_MARK))
    return prose, blocks


INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)


def paragraphs(prose: list[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """Prose lines joined into paragraphs (first line number, text), since links and code spans may wrap."""
    for blank, group in itertools.groupby(prose, key=lambda item: not item[1].strip()):
        if not blank:
            group = list(group)
            yield group[0][0], "\n".join(line for _, line in group)


def inline_code(text: str) -> list[str]:
    return [" ".join(match.group(2).split()) for match in INLINE_CODE.finditer(text)]


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text, lower-cased, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)       # links and images keep their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    kept = "".join(ch for ch in text.lower().strip()
                   if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(path: Path, text: str | None = None) -> set[str]:
    """Every anchor of a markdown file: heading slugs (repeats get -1, -2, ...) and explicit ids."""
    prose, _ = split_markdown(path.read_text(encoding="utf-8") if text is None else text)
    found, seen = set(), {}
    for _, line in prose:
        heading = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = github_slug(heading.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
        found.update(re.findall(r"""<a\s+(?:name|id)=["']([^"']+)["']""", line))
    return found


# ---------------------------------------------------------------- links and anchors

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"""(?:href|src)=["']([^"']+)["']""")


def link_problems(path: Path, text: str | None = None) -> list[str]:
    """One line per link of ``path`` (or of ``text``, read as if it were there) whose file or #anchor does not exist."""
    problems = []
    text = path.read_text(encoding="utf-8") if text is None else text
    prose, _ = split_markdown(text)
    for number, paragraph in paragraphs(prose):
        paragraph = INLINE_CODE.sub("", paragraph)
        for target in LINK.findall(paragraph) + HTML_LINK.findall(paragraph):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):       # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(ROOT)}:{number}: {target}"
            if file_part and not linked.exists():
                problems.append(f"{where}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked, None if file_part else text):
                problems.append(f"{where}: no heading with anchor #{anchor} in {linked.relative_to(ROOT)}")
    return problems


# ---------------------------------------------------------------- paths named in the text

PATH = re.compile(r"(?<![\w./$~-])((?:tools|configs|tests|softpool3d|docs)/[\w./{},*$-]*)")


def expand_braces(pattern: str) -> list[str]:
    """Shell brace expansion: ``a/{b,c}.yaml`` -> ``a/b.yaml``, ``a/c.yaml``."""
    match = re.search(r"\{([^{}]*,[^{}]*)\}", pattern)
    if not match:
        return [pattern]
    return [expanded for choice in match.group(1).split(",")
            for expanded in expand_braces(pattern[:match.start()] + choice + pattern[match.end():])]


def path_problems(text: str, where: str) -> list[str]:
    """One line per repository path named in ``text`` that does not exist; ``$var`` and ``*`` must match some file."""
    problems = []
    for named in PATH.findall(text):
        named = named.rstrip(".,")
        for candidate in expand_braces(named):
            pattern = re.sub(r"\$\{?\w+\}?", "*", candidate)
            if "*" in pattern:
                exists = bool(glob.glob(str(ROOT / pattern)))
            else:
                exists = (ROOT / pattern).exists()
            if not exists:
                problems.append(f"{where}: {candidate} does not exist")
    return problems


# ---------------------------------------------------------------- commands and their flags

@dataclass(frozen=True)
class CommandForm:
    """How a command is written in the docs, and how to print its help."""
    pattern: re.Pattern
    help_argv: Callable[[re.Match], tuple[str, ...]]
    name: Callable[[re.Match], str]


COMMAND_FORMS = [
    # python tools/train.py ..., torchrun ... tools/train.py ...
    CommandForm(re.compile(r"(?<![\w/.-])tools/([\w-]+)\.py(?![\w.])"),
                lambda m: (sys.executable, f"tools/{m.group(1)}.py", "--help"),
                lambda m: f"tools/{m.group(1)}.py"),
    # the installed CLI: softpool3d train ..., softpool3d check-videos ...
    CommandForm(re.compile(r"(?:^|(?<=[\s;&|(]))softpool3d\s+([a-z][\w-]*)(?=\s|$)"),
                lambda m: (sys.executable, "-m", "softpool3d", m.group(1), "--help"),
                lambda m: f"softpool3d {m.group(1)}"),
]
SEPARATOR = re.compile(r"\s(?:;|&&|\|\||\||>|2>|#)\s|;\s*(?:done|do)\b")
FLAG = re.compile(r"(?<![\w-])(--[A-Za-z][\w-]*)")


@dataclass(frozen=True)
class Invocation:
    command: str
    help_argv: tuple[str, ...]
    flags: tuple[str, ...]
    where: str
    arguments: str = ""


def shell_lines(path: Path, text: str | None = None) -> Iterator[tuple[int, str]]:
    """Lines of shell: those of shell and output blocks (continuations joined), and inline code spans."""
    prose, blocks = split_markdown(path.read_text(encoding="utf-8") if text is None else text)
    for block in blocks:
        if block.language not in SHELL_LANGUAGES:
            continue
        joined = re.sub(r"\\\n\s*", " ", block.text)
        for offset, line in enumerate(joined.splitlines()):
            yield block.line + 1 + offset, line
    for number, paragraph in paragraphs(prose):
        for span in inline_code(paragraph):
            yield number, span


def invocations(path: Path, text: str | None = None) -> list[Invocation]:
    """Every command with its flags, e.g. ``python tools/export.py --shape ... --out ...``."""
    found = []
    for number, line in shell_lines(path, text):
        matches = sorted((match.start(), match, form) for form in COMMAND_FORMS for match in form.pattern.finditer(line))
        for index, (start, match, form) in enumerate(matches):
            end = matches[index + 1][0] if index + 1 < len(matches) else len(line)
            arguments = line[match.end():end]
            separator = SEPARATOR.search(arguments)
            arguments = arguments[:separator.start()] if separator else arguments
            found.append(Invocation(form.name(match), form.help_argv(match), tuple(FLAG.findall(arguments)),
                                    f"{path.relative_to(ROOT)}:{number}", arguments))
    return found


@functools.cache
def help_text(argv: tuple[str, ...]) -> str:
    """The command's --help output; a command whose --help fails raises with its stderr."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv[1:])} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


def prefetch_help(argvs) -> None:
    """Run every --help once, in parallel, so that help_text answers from its cache."""
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        list(pool.map(lambda argv: _try(help_text, argv), sorted(set(argvs))))


def _try(fn, argument):
    try:
        fn(argument)
    except AssertionError:
        pass   # reported by the test that asks for it


def flag_problems(calls: list[Invocation]) -> list[str]:
    problems = []
    for call in calls:
        try:
            text = help_text(call.help_argv)
        except AssertionError as error:
            problems.append(f"{call.where}: {error}")
            continue
        for flag in call.flags:
            if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text):
                problems.append(f"{call.where}: {call.command} has no {flag} (not in its --help)")
    return problems


OVERRIDE = re.compile(r"^[a-z_]+(?:\.[a-z_]+)*=\S*$")


def override_problems(calls: list[Invocation]) -> list[str]:
    """Commands given ``--config FILE`` and ``key=value`` overrides: the config must load with them."""
    from softpool3d.engine.config import load_config

    problems = []
    for call in calls:
        words = call.arguments.split()
        if "--config" not in words[:-1]:
            continue
        config = ROOT / words[words.index("--config") + 1]
        overrides = [word for word in words if OVERRIDE.match(word) and "$" not in word]
        if not config.is_file() or not overrides:
            continue   # a placeholder, a shell variable, or nothing to check
        try:
            load_config(config, overrides)
        except ValueError as error:
            problems.append(f"{call.where}: {call.command} --config {config.relative_to(ROOT)}: {error}")
    return problems


MAKE = re.compile(r"(?:^|(?<=[\s;&|(]))make\s+([a-z][\w-]*)")


def make_problems(path: Path, text: str | None = None) -> list[str]:
    targets = set(re.findall(r"^([\w-]+)\s*:", (ROOT / "Makefile").read_text(), re.M))
    return [f"{path.relative_to(ROOT)}:{number}: make {target}: no such target in the Makefile"
            for number, line in shell_lines(path, text) for target in MAKE.findall(line) if target not in targets]


# ---------------------------------------------------------------- the tests

def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_docs_exist():
    expected = {"getting-started", "data", "training", "models", "inference", "deployment", "operator",
                "benchmarks", "studies", "development"}
    assert expected <= {path.stem for path in GUIDES}
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200


@pytest.mark.parametrize("path", LINKED, ids=_relative)
def test_links_and_anchors_resolve(path):
    problems = link_problems(path)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", GUIDES, ids=_relative)
def test_named_paths_exist(path):
    text = path.read_text(encoding="utf-8")
    problems = [problem for number, line in enumerate(text.splitlines(), 1)
                for problem in path_problems(line, f"{_relative(path)}:{number}")]
    problems += make_problems(path)
    assert not problems, "\n".join(problems)


def test_command_flags_exist_in_their_help():
    calls = [call for path in GUIDES for call in invocations(path)]
    assert any(call.flags for call in calls), "no command with flags found: the parser is broken"
    prefetch_help(call.help_argv for call in calls)
    problems = flag_problems(calls)
    assert not problems, "\n".join(problems)


def test_config_overrides_in_commands_load():
    calls = [call for path in GUIDES for call in invocations(path)]
    problems = override_problems(calls)
    assert not problems, "\n".join(problems)


RUNNABLE = [(path, block) for path in GUIDES for block in split_markdown(path.read_text(encoding="utf-8"))[1]
            if block.runnable]


def test_there_are_runnable_examples():
    assert {path.name for path, _ in RUNNABLE} >= {"README.md", "operator.md"}
    assert all(block.language == "python" for _, block in RUNNABLE)


@pytest.mark.parametrize("path, block", RUNNABLE, ids=[f"{_relative(p)}:{b.line}" for p, b in RUNNABLE])
def test_runnable_example_runs(path, block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOFTPOOL3D_ROOT", str(ROOT))
    code = compile(block.text, f"{_relative(path)}:{block.line}", "exec")
    exec(code, {"__name__": "__docs__"})


# ---------------------------------------------------------------- the checks themselves can fail

def test_checks_catch_broken_links_paths_and_flags():
    page = ROOT / "docs" / "_broken_example.md"   # read as if it were in docs/; never written
    text = (
        "# A page\n\n## Its `second` heading\n\n"
        "[ok](#its-second-heading) [ok](operator.md#dispatch) [missing file](nowhere.md) "
        "[missing anchor](#no-such-heading) [other page's anchor](operator.md#no-such-heading) "
        "`[not a link](nowhere.md)`\n\n"
        "```bash\npython tools/train.py --config configs/synthmotion.yaml --no-such-flag  # --ignored\n"
        "torchrun --nproc_per_node 2 tools/test.py --config configs/nowhere.yaml --checkpoint x.pt\n"
        "python tools/train.py --config configs/synthmotion.yaml optim.lrr=0.1 train.epochs=2\n"
        "make test && make no-such-target\n```\n\n"
        "`python tools/predict.py clip.mp4 --checkpoint p.pt --window 2`, `configs/{ucf101,nowhere}/r3d_18_soft.yaml`\n")
    links = link_problems(page, text)
    calls = invocations(page, text)
    prefetch_help(call.help_argv for call in calls)
    flags = flag_problems(calls)
    paths = path_problems(text, "page")
    makes = make_problems(page, text)
    overrides = override_problems(calls)
    assert [problem.split(": ", 1)[1] for problem in links] == [
        "nowhere.md: no such file",
        "#no-such-heading: no heading with anchor #no-such-heading in docs/_broken_example.md",
        "operator.md#no-such-heading: no heading with anchor #no-such-heading in docs/operator.md"]
    assert [(call.command, call.flags) for call in calls] == [
        ("tools/train.py", ("--config", "--no-such-flag")), ("tools/test.py", ("--config", "--checkpoint")),
        ("tools/train.py", ("--config",)), ("tools/predict.py", ("--checkpoint", "--window"))]
    assert len(flags) == 1 and flags[0].endswith("tools/train.py has no --no-such-flag (not in its --help)")
    assert paths == ["page: configs/nowhere.yaml does not exist", "page: configs/nowhere/r3d_18_soft.yaml does not exist"]
    assert len(makes) == 1 and makes[0].endswith("make no-such-target: no such target in the Makefile")
    assert len(overrides) == 1 and "'optim.lrr'" in overrides[0] and "'optim.lr'" in overrides[0]


def test_slugs_follow_github():
    assert github_slug("SoftPool operator on the GPU (Triton)") == "softpool-operator-on-the-gpu-triton"
    assert github_slug("`make run`") == "make-run"
    assert github_slug("Study 2: accuracy, soft vs max vs avg") == "study-2-accuracy-soft-vs-max-vs-avg"
    assert github_slug("The math, and what happens at the edges") == "the-math-and-what-happens-at-the-edges"
    assert github_slug("**Bold** and [a link](x.md) in_code") == "bold-and-a-link-in_code"
