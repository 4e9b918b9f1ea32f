"""The README's commands stay true: every config and key a `train.py` command uses loads, every run a
later command reads (sample.py, --data, --segmenter, model.init_from) is created by an earlier
command, and every sample.py flag exists. The quickstart itself runs in CI through test_runs'
tiny twin; this test keeps the rest of the tour honest without training."""
import re
import shlex

from gen import config
from conftest import ROOT

README = (ROOT / "README.md").read_text()


def commands() -> list[list[str]]:
    """Every shell command of the README's bash blocks, continuation lines joined, $S expanded."""
    out, env = [], {}
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if not line or line.startswith("#"):
                continue
            m = re.fullmatch(r'(\w+)="(.*)"', line)
            if m:
                env[m.group(1)] = m.group(2)
                continue
            for name, value in env.items():
                line = line.replace(f"${name}", value)
            for part in line.split("&&"):
                out.append(shlex.split(part))
    return out


def run_dir_of(argv: list[str]) -> str:
    overrides = dict(a.split("=", 1) for a in argv if "=" in a)
    if "run.dir" in overrides:
        return overrides["run.dir"]
    cfg_file = next((a for a in argv if a.endswith(".yaml")), None)
    return config.load(ROOT / cfg_file).run.dir if cfg_file else config.ExperimentConfig().run.dir


def test_readme_train_commands_load_and_every_run_read_was_made_before():
    made: set[str] = set()
    checked = 0
    for argv in commands():
        if "train.py" not in argv:
            continue
        args = argv[argv.index("train.py") + 1:]
        if args and args[0].startswith("-"):
            continue
        cfg_file, overrides = (args[0], args[1:]) if args and args[0].endswith(".yaml") else (None, args)
        overrides = [o for o in overrides if "/path/to/" not in o and "/my/" not in o]
        config.load(ROOT / cfg_file if cfg_file else None, overrides)  # unknown keys / bad values fail here
        checked += 1
    assert checked >= 20
    for argv in commands():
        reads = [
            a for a in argv if re.fullmatch(r"runs/[\w-]+/?", a) or a.startswith("model.init_from=runs/")
        ]
        for r in reads:
            name = r.split("=", 1)[-1].rstrip("/")
            is_output = ("train.py" in argv and r.startswith("run.dir=")) or (
                "gen.convert" in argv and "--out" in argv and argv[argv.index("--out") + 1] == r)
            if not is_output:
                assert name in made, f"README reads {name} before any command creates it: {' '.join(argv)}"
        if "gen.convert" in argv and "--out" in argv and argv[argv.index("--out") + 1].startswith("runs/"):
            made.add(argv[argv.index("--out") + 1].rstrip("/"))  # a converted model is a run like any other
        if "train.py" in argv or "torchrun" in argv:
            run = run_dir_of(argv)
            again = f"README trains {run} again (it would only resume a finished run): {' '.join(argv)}"
            assert run not in made, again
            made.add(run)


def test_readme_sample_flags_exist():
    import subprocess
    import sys
    helps = {}
    for sub in ("", "evaluate", "compare"):
        args = [sys.executable, str(ROOT / "sample.py")] + ([sub] if sub else []) + ["--help"]
        helps[sub] = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=60).stdout
    for argv in commands():
        if "sample.py" not in argv:
            continue
        args = argv[argv.index("sample.py") + 1:]
        sub = args[0] if args and args[0] in ("evaluate", "compare") else ""
        known = set(re.findall(r"--[\w-]+", helps[sub]))
        for flag in (a for a in args if a.startswith("--")):
            assert flag in known, f"sample.py {sub} has no {flag}: {' '.join(argv)}"


def test_readme_convert_commands_use_real_subcommands_and_flags():
    import subprocess
    import sys
    used = [argv[argv.index("gen.convert") + 1:] for argv in commands() if "gen.convert" in argv]
    assert {args[0] for args in used} == {"reference", "diffusers", "to-diffusers"}
    for args in used:
        helptext = subprocess.run([sys.executable, "-m", "gen.convert", args[0], "--help"],
                                  capture_output=True, text=True, cwd=ROOT, timeout=60).stdout
        known = set(re.findall(r"--[\w-]+", helptext))
        for flag in (a for a in args if a.startswith("--")):
            assert flag in known, f"gen.convert {args[0]} has no {flag}: {' '.join(args)}"
