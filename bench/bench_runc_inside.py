"""`runc create` and `runc start` as each engine runs them, timed from inside.

Both engines run `ctr run -d --runc-binary <wrapper>`, the wrapper a small C program
compiled here (`cc` is needed) that forks and execs the real runc with its argv,
waits for it without reaping (`waitid(..., WNOWAIT)`), reads its
`/proc/<pid>/schedstat` (nanoseconds on a CPU, nanoseconds waiting in the run
queue) and its own `/proc/self/autogroup`, then reaps it with `wait4` (its rusage:
the CPU of runc and of the `runc init` stages it reaped) and appends one record per
command to a log. So the runtime's own cost is compared with what each engine does
around it: the same command line, spec, cgroups and stdio should give the same
figures; a difference points at how the engine starts it (the autogroup of its
session, say). With `--before DIR` a second checkout's engine runs too, every round
going through the engines in turn. Prints p50s per engine and subcommand.

    .venv/bin/python -m bench.bench_runc_inside [--rounds 30] [--before /path/to/checkout]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench import bench_tasks as bt
from bench.bench_tasks_ab import engine_proc_of
from tests import engine_proc

WARMUP = 2
SUBCOMMANDS = ("create", "start")
WRAPPER = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/wait.h>
static double now(void){
  struct timespec t; clock_gettime(CLOCK_REALTIME,&t); return t.tv_sec+t.tv_nsec/1e9;
}
int main(int argc,char**argv){
  double t0=now(); pid_t p=fork();
  if(p==0){argv[0]="runc";execv(RUNC,argv);_exit(127);}
  siginfo_t si; waitid(P_PID,p,&si,WEXITED|WNOWAIT);
  char path[64],ss[128]="0 0 0\n",ag[128]="?\n"; FILE*f;
  snprintf(path,sizeof path,"/proc/%d/schedstat",p);
  if((f=fopen(path,"r"))){if(!fgets(ss,sizeof ss,f))ss[0]=0;fclose(f);}
  if((f=fopen("/proc/self/autogroup","r"))){if(!fgets(ag,sizeof ag,f))ag[0]=0;fclose(f);}
  int st; struct rusage ru; wait4(p,&st,0,&ru); double t1=now();
  ss[strcspn(ss,"\n")]=0; ag[strcspn(ag,"\n")]=0;
  FILE*o=fopen(LOG,"a");
  fprintf(o,"%.6f %.6f %ld.%06ld %ld.%06ld %s|%s|",t0,t1,ru.ru_utime.tv_sec,ru.ru_utime.tv_usec,
          ru.ru_stime.tv_sec,ru.ru_stime.tv_usec,ss,ag);
  for(int i=1;i<argc;i++)fprintf(o," %s",argv[i]);
  fprintf(o,"\n"); fclose(o);
  return WIFEXITED(st)?WEXITSTATUS(st):1;
}
"""


def build_wrapper(work: Path, log: Path) -> Path:
    runc = shutil.which("runc")
    if runc is None:
        raise SystemExit("runc is not installed")
    source, binary = work / "runc-timed.c", work / "runc-timed"
    source.write_text(WRAPPER)
    subprocess.run(
        ["cc", "-O2", f'-DRUNC="{runc}"', f'-DLOG="{log}"', "-o", str(binary), str(source)],
        check=True,
    )
    return binary


def records(log: Path) -> list[tuple[str, dict[str, float], str]]:
    """(subcommand, figures in ms, autogroup) of each command the wrapper logged."""
    found = []
    for line in log.read_text().splitlines():
        head, group, argv = line.split("|", 2)
        t0, t1, user, system, run, wait, _ = head.split()
        sub = next((w for w in argv.split() if w in SUBCOMMANDS), "")
        figures = {
            "wall": (float(t1) - float(t0)) * 1000,
            "cpu": (float(user) + float(system)) * 1000,
            "on cpu": int(run) / 1e6,
            "run-queue wait": int(wait) / 1e6,
        }
        found.append((sub, figures, group))
    return found


async def measure(
    rounds: int, before: Path | None, wrapper: Path, log: Path
) -> tuple[dict[str, dict[str, list[float]]], dict[str, set[str]]]:
    with contextlib.ExitStack() as stack:
        engines = {"containerd": stack.enter_context(engine_proc.containerd(""))}
        if before:
            engines["before"] = stack.enter_context(engine_proc_of(before).ctrdeck("version = 2\n"))
        engines["ctrdeck"] = stack.enter_context(engine_proc.ctrdeck("version = 2\n"))
        got: dict[str, dict[str, list[float]]] = {k: {} for k in engines}
        groups: dict[str, set[str]] = {k: set() for k in engines}
        async with bt.prepared(engines) as clients:
            for i in range(WARMUP + rounds):
                for k, running in engines.items():
                    cid = f"inside-{i}"
                    log.write_text("")
                    argv = bt.Target(running).run_argv(
                        "-d", "--runc-binary", str(wrapper), bt.IMAGE, cid, "sleep", "1000"
                    )
                    bt.checked(argv)
                    if i >= WARMUP:
                        for sub, figures, group in records(log):
                            if sub:
                                groups[k].add(f"{sub}: {group}")
                            for name, value in figures.items():
                                got[k].setdefault(f"runc {sub} {name}", []).append(value)
                    await bt.end_task(clients[k], cid)
                    await bt.remove_container(clients[k], cid)
    return got, groups


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--before", type=Path, help="a checkout whose engine runs alongside")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="runc-inside-") as tmp:
        log = Path(tmp) / "log"
        wrapper = build_wrapper(Path(tmp), log)
        before = args.before.resolve() if args.before else None
        got, groups = asyncio.run(measure(args.rounds, before, wrapper, log))
    print(f"{args.rounds} rounds per engine after {WARMUP}; load {bt.load_average()}\n")
    print("| p50 | " + " | ".join(got) + " |")
    print("|---" * (len(got) + 1) + "|")
    for row in sorted({r for figures in got.values() for r in figures}):
        cells = [
            f"{statistics.median(got[k][row]):.2f} ms" if got[k].get(row) else "-" for k in got
        ]
        print(f"| {row} | " + " | ".join(cells) + " |")
    for k, seen in groups.items():
        print(f"\n{k}: " + "; ".join(sorted(seen)))


if __name__ == "__main__":
    main()
