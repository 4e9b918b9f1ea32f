"""The manual's commands stay true: README.md, then every docs/*.md page in the order the README's
Manual lists them, as a user runs them on a fresh clone. Every config and key a `train.py` command
uses loads; every run a later command reads (sample.py, --data, --segmenter, model.init_from) is
made by an earlier command, on the same page or on an earlier page that the page links to; no run is
trained twice; every flag of sample.py, gen.convert and the other scripts exists (with a listed
value where it has choices); every script, config file, extra, repository path and link named
exists. The quickstart itself runs in CI through test_runs' tiny twin; this test keeps the rest of
the manual honest without training."""
import ast
import contextlib
import importlib.util
import io
import re
import shlex
from functools import cache
from pathlib import Path

import pytest

from gen import config
from conftest import ROOT

README = ROOT / "README.md"
# The README's two commands, exactly: .ci/run runs the second verbatim.
QUICKSTART = ("python3 -m venv .venv && . .venv/bin/activate && pip install -e . "
              "&& python train.py configs/quickstart.yaml")
TESTS = 'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[dev]" && python -m pytest -q'
PLACEHOLDERS = ("/path/to/", "/my/")  # the user's own data: not in a fresh clone
OTHER_MODULES = {"pytest", "venv", "pip"}  # `python -m X` that are not gen's


def manual_pages() -> list[Path]:
    """README.md, then the docs/ pages in the order of the README's Manual section."""
    section = README.read_text().split("\n## Manual\n", 1)[1].split("\n## ", 1)[0]
    pages = [README]
    for link in re.findall(r"\]\((docs/[\w-]+\.md)\)", section):
        if ROOT / link not in pages:
            pages.append(ROOT / link)
    return pages


def name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def commands(text: str) -> list[list[str]]:
    """Every shell command of a page's bash blocks, continuation lines joined, its variables expanded."""
    out, env = [], {}
    for block in bash_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if not line or line.startswith("#"):
                continue
            m = re.fullmatch(r'(\w+)=(?:"(.*)"|(\S*))', line)
            if m:
                env[m.group(1)] = m.group(2) if m.group(2) is not None else m.group(3)
                continue
            for var, value in env.items():
                line = line.replace(f"${var}", value)
            for part in line.split("&&"):
                out.append(shlex.split(part))
    return out


def inline_commands(text: str) -> list[list[str]]:
    """Commands quoted in the prose (`python sample.py RUN --input DIR`, `sample.py evaluate ...`,
    `bash bench/x.sh`)."""
    quoted = re.findall(r"`((?:python3? |sample\.py |bash )[^`]+)`", prose(text))
    spans = (" ".join(s.split()) for s in quoted)
    return [shlex.split(f"python {s}" if s.startswith("sample.py") else s) for s in spans]


def page_commands(inline: bool = False) -> list[tuple[Path, list[str]]]:
    """(page, argv) of every command of the manual in reading order; `inline` adds the prose's."""
    return [(page, argv) for page in manual_pages() for argv in commands(page.read_text())
            + (inline_commands(page.read_text()) if inline else [])]


def run_dir_of(argv: list[str]) -> str:
    args = argv[argv.index("train.py") + 1:]  # after a launcher's own options (--config_file X.yaml)
    overrides = dict(a.split("=", 1) for a in args if "=" in a)
    if "run.dir" in overrides:
        return overrides["run.dir"]
    cfg_file = next((a for a in args if a.endswith(".yaml")), None)
    return config.load(ROOT / cfg_file).run.dir if cfg_file else config.ExperimentConfig().run.dir


def flag_value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else None


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def prose(text: str) -> str:
    """The page without its fenced blocks (a `# comment` in a bash block is not a heading)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def anchors(page: Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#+ (.+)$", prose(page.read_text()), re.M)}


def links(page: Path) -> list[tuple[str, Path, str]]:
    """(as written, target file, anchor) of every relative link on a page."""
    out = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        out.append((target, (page.parent / path).resolve() if path else page, anchor))
    return out


def test_readme_two_commands_stay_as_ci_runs_them():
    blocks = [b.strip() for b in bash_blocks(README.read_text())]
    assert blocks[:2] == [QUICKSTART, TESTS]
    assert TESTS in (ROOT / ".ci" / "run").read_text().splitlines()


def test_every_docs_page_is_in_the_manual():
    assert sorted(manual_pages()[1:]) == sorted((ROOT / "docs").glob("*.md"))


def test_train_commands_load():
    checked = 0
    for page, argv in page_commands():
        if "train.py" not in argv:
            continue
        args = argv[argv.index("train.py") + 1:]
        if args and args[0].startswith("-"):
            continue
        cfg_file, overrides = (args[0], args[1:]) if args and args[0].endswith(".yaml") else (None, args)
        overrides = [o for o in overrides if not any(p in o for p in PLACEHOLDERS)]
        try:
            config.load(ROOT / cfg_file if cfg_file else None, overrides)
        except (ValueError, FileNotFoundError) as err:  # unknown keys, bad values, missing files
            pytest.fail(f"{name(page)}: {' '.join(argv)}: {err}")
        checked += 1
    assert checked >= 40


def test_every_run_is_made_before_it_is_read_and_trained_once():
    made: dict[str, Path] = {}  # run -> the page whose command made it
    for page, argv in page_commands():
        where = f"{name(page)}: {' '.join(argv)}"
        linked = {target for _, target, _ in links(page)}
        convert_out = flag_value(argv, "--out") if "gen.convert" in argv else None
        runs = [a for a in argv if re.fullmatch(r"runs/[\w-]+/?", a) or a.startswith("model.init_from=runs/")]
        for r in runs:
            run = r.split("=", 1)[-1].rstrip("/")
            if r.startswith("run.dir=") or r == convert_out:
                continue
            assert run in made, f"{run} is read before any command makes it: {where}"
            assert made[run] in (page, README) or made[run] in linked, (
                f"{run} is made on {name(made[run])}, which {name(page)} does not link to: {where}")
        if convert_out and convert_out.startswith("runs/"):
            made[convert_out.rstrip("/")] = page  # a converted model is a run like any other
        if "train.py" in argv:
            run = run_dir_of(argv)
            rank = flag_value(argv, "--machine_rank") or flag_value(argv, "--node_rank") or "0"
            if rank != "0":  # another machine of the same run: joins what rank 0 started
                assert made.get(run) == page, f"machine rank {rank} of a run no rank 0 started: {where}"
                continue
            assert run not in made, f"{run} is trained again (it would only resume a finished run): {where}"
            made[run] = page


@cache
def cli_help(prog: str, sub: str) -> str:
    """`--help` of sample.py or gen.convert (a subcommand of it), run in this process: fast."""
    if prog == "sample.py":
        spec = importlib.util.spec_from_file_location("sample_cli", ROOT / "sample.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        import gen.convert.__main__ as module
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        module.main(([sub] if sub else []) + ["--help"])
    return out.getvalue()


def check_flags(args: list[str], helptext: str, where: str) -> None:
    known = set(re.findall(r"--[\w-]+", helptext))
    choices = {f: c.split(",") for f, c in re.findall(r"(--[\w-]+) \{([^}]*)\}", helptext)}
    for i, flag in enumerate(args):
        if not flag.startswith("--"):
            continue
        assert flag in known, f"no {flag}: {where}"
        if flag in choices and i + 1 < len(args) and not re.fullmatch(r"[A-Z_]+", args[i + 1]):  # not X, N
            assert args[i + 1] in choices[flag], f"{flag} takes {choices[flag]}, not {args[i + 1]}: {where}"


def test_sample_and_convert_flags_exist():
    main = (ROOT / "gen" / "convert" / "__main__.py").read_text()
    conversions, shown = set(re.findall(r"add_parser\(\"([\w-]+)\"", main)), set()
    for page, argv in page_commands(inline=True):
        where = f"{name(page)}: {' '.join(argv)}"
        if "sample.py" in argv:
            args = argv[argv.index("sample.py") + 1:]
            sub = args[0] if args and args[0] in ("evaluate", "compare", "metrics", "serve") else ""
            check_flags(args, cli_help("sample.py", sub), where)
        if "gen.convert" in argv[:-1]:
            args = argv[argv.index("gen.convert") + 1:]
            assert args[0] in conversions, f"no gen.convert {args[0]}, only {sorted(conversions)}: {where}"
            shown.add(args[0])
            check_flags(args, cli_help("gen.convert", args[0]), where)
    assert shown == conversions  # every conversion has a command in the manual


def script_flags(path: Path) -> set[str]:
    """The --flags a script's argparse declares, read from its source (no import: fast)."""
    calls = (n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call))
    return {a.value for c in calls if getattr(c.func, "attr", "") == "add_argument"
            for a in c.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")}


def test_scripts_files_and_extras_named_exist():
    extras_section = (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]")[1]
    extras = set(re.findall(r"^(\w+) =", extras_section.split("\n[", 1)[0], re.M))
    for page, argv in page_commands(inline=True):
        where = f"{name(page)}: {' '.join(argv)}"
        saved = set(re.findall(r"[Ss]ave (?:this|it) as `([^`]+)`", page.read_text()))
        for i, a in enumerate(argv[:-1]):
            nxt = argv[i + 1]
            if a in ("python", "python3") and nxt.endswith(".py") and nxt not in saved:
                script = ROOT / nxt
                assert script.is_file(), f"no {nxt}: {where}"
                if nxt not in ("train.py", "sample.py"):
                    check_flags(argv[i + 2:], " ".join(script_flags(script)), where)
            if a in ("python", "python3") and nxt == "-m" and argv[i + 2] not in OTHER_MODULES:
                module = ROOT / argv[i + 2].replace(".", "/")
                script = module.with_suffix(".py")
                script = script if script.is_file() else module / "__main__.py"
                assert script.is_file(), f"no module {argv[i + 2]}: {where}"
                if argv[i + 2] != "gen.convert":  # its subcommands: test_sample_and_convert_flags_exist
                    check_flags(argv[i + 3:], " ".join(script_flags(script)), where)
            if a in ("bash", "sbatch", "--config_file"):
                assert (ROOT / nxt).is_file(), f"no {nxt}: {where}"
            if a == "-e" and "[" in nxt:
                for extra in nxt.split("[", 1)[1].rstrip("]").split(","):
                    assert extra in extras, f"pyproject.toml has no extra {extra!r}: {where}"
        for a in argv:
            if a.endswith(".yaml") and not any(p in a for p in PLACEHOLDERS) and a != "CONFIG.yaml":
                assert (ROOT / a).is_file(), f"no {a}: {where}"


def test_repository_paths_and_links_named_exist():
    for page in manual_pages():
        text = prose(page.read_text())
        for path in re.findall(r"`((?:gen|trainers|configs|bench|tests|docs)/[\w./-]*)`", text):
            assert (ROOT / path).exists(), f"{name(page)} names {path}, which does not exist"
        for written, target, anchor in links(page):
            assert target.exists(), f"{name(page)} links to {written}: no such file"
            if anchor:
                assert anchor in anchors(target), f"{name(page)} links to {written}: no such heading"
