"""The README's speed tables from ``make bench``'s results, one per CPU vector width, CPU and
thread count: ``benchmarks/results/bench-<simd>-<cpu>-<threads>.md`` (written by ``logitloss
bench --markdown``), placed between the ``bench`` markers in README.md.

    python benchmarks/bench_readme.py [--results DIR] [--readme README.md]
    python benchmarks/bench_readme.py --name-for-threads N    (a run's file stem, for make)

A table measured on another machine stays until that machine's run replaces it: each says
which CPU, vector width, thread count and date it comes from.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
_HEADER = re.compile(r"<!-- (\w+): (.*) -->")


def result_name(simd: str, cpu: str, threads: int) -> str:
    """The results' file stem for a run: ``bench-avx-512-intel-xeon-1-thread``,
    ``bench-avx2-amd-ryzen-2-threads``; the CPU's vendor and family (the first two words of
    its name) keep two machines with the same vector width apart."""
    words = re.sub(r"\(\w+\)", "", cpu).lower().split()[:2]
    family = "-".join(re.sub(r"[^a-z0-9]+", "-", word).strip("-") for word in words)
    plural = "" if threads == 1 else "s"
    return f"bench-{simd.lower()}-{family or 'cpu'}-{threads}-thread{plural}"


def read(path: Path) -> tuple[dict[str, str], str]:
    """A markdown result's header (``<!-- key: value -->`` lines) and its table."""
    env, table = {}, []
    for line in path.read_text().splitlines():
        found = _HEADER.fullmatch(line)
        if found:
            env[found[1]] = found[2]
        else:
            table.append(line)
    return env, "\n".join(table).strip() + "\n"


def section(env: dict[str, str], table: str) -> str:
    """One run's table under a heading naming the machine, with its versions below."""
    threads = env.get("threads", "?")
    noun = "thread" if threads == "1" else "threads"
    libraries = {"numba": "numba", "torch": "PyTorch", "jax": "JAX", "tensorflow": "TensorFlow"}
    versions = ", ".join(f"{name} {env[key]}" for key, name in libraries.items() if key in env)
    quiet = env.get("quiet_rounds", "?")
    busy = env.get("rounds_discarded_for_other_processes", "?")
    return (
        f"#### {env.get('simd', '?')}, {threads} {noun}: {env.get('cpu', '?')}, "
        f"{env.get('cores', '?')} cores, {env.get('date', '?')[:10]}\n\n{table}\n"
        f"{versions}, NumPy {env.get('numpy', '?')}; numba threading layer "
        f"{env.get('numba_threading_layer', '?')}; "
        f"{quiet} quiet rounds, {busy} measured again after other processes ran.\n"
    )


def block(results: Path) -> str:
    """Every run's section, by vector width, CPU, then thread count."""
    runs = []
    for path in sorted(results.glob("bench-*.md")):
        env, table = read(path)
        key = (env.get("simd", ""), env.get("cpu", ""), int(env.get("threads", "0") or 0))
        runs.append((key, env, table))
    sections = [section(env, table) for _, env, table in sorted(runs, key=lambda r: r[0])]
    return BEGIN + "\n" + "\n".join(sections) + END


def rewrite(readme: Path, results: Path) -> None:
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme}: no {BEGIN} ... {END} block to replace")
    head, rest = text.split(BEGIN, 1)
    readme.write_text(head + block(results) + rest.split(END, 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--name-for-threads", type=int, metavar="N",
                        help="print the file stem of a run on N threads, and stop")  # fmt: skip
    args = parser.parse_args()
    if args.name_for_threads is not None:
        from logitloss._tools.bench.timing import cpu_name, simd

        print(result_name(simd(), cpu_name(), args.name_for_threads))
        return
    rewrite(args.readme, args.results)
    print(f"rewrote {args.readme}")


if __name__ == "__main__":
    main()
