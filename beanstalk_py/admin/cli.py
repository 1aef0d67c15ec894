"""The argument parser of ``beanstalk-py admin``: one subcommand per action,
each with its own ``--help``, and the exit codes in one place."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from .api import ENV_TOKEN, MAX_PAGE, parse_url, read_token_file
from .client import EXIT_FAILED, MAX_PRI, AdminError, UsageError, check_tube, parse_addr
from .commands import (
    DEFAULT_JOBS,
    STATES,
    Context,
    cmd_clear,
    cmd_delete,
    cmd_drain,
    cmd_jobs,
    cmd_kick,
    cmd_kick_job,
    cmd_move,
    cmd_pause,
    cmd_peek,
    cmd_peek_state,
    cmd_put,
    cmd_stats,
    cmd_status,
    cmd_tubes,
)
from .top import cmd_top
from .storexfer import cmd_migrate
from .transfer import cmd_export, cmd_import

Handler = Callable[[Context, argparse.Namespace], int]

EPILOG = f"""\
exit status: 0 ok, 1 not found (no such job or tube, NOT_FOUND, 404), 2 usage
(bad arguments, or a command that needs --url), 3 cannot connect (refused,
timed out, connection lost), 4 the server refused the command (DRAINING,
JOB_TOO_BIG, 401, 403, 409, 503 ...) or drain refused to signal the process.

The address is 127.0.0.1:11300 unless --addr or --unix says otherwise; the
commands that speak the beanstalk protocol use it, so they work against
beanstalkd 1.12 too. jobs, move, and clear and export given --url, use the
daemon's HTTP API (--http) instead; both --url and --addr may be given.
export and import given --store URL, and migrate, read and write a Redis
store (redis://HOST:PORT/DB, the front ends' --store) directly. The
token for --url: --token-file FILE (mode 600), --token TOKEN or ${ENV_TOKEN}.
The admin's own connection is left out of the counts of `tubes` and `top`.
"""


def _job_id(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 2**64:
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id (a positive integer)")
    return int(text)


def _u32(text: str) -> int:
    if not text.isdigit() or int(text) > MAX_PRI:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer from 0 to {MAX_PRI}")
    return int(text)


def _tube(text: str) -> str:
    try:
        return check_tube(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError("give 0.05 to 3600 seconds")
    return value


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def _bulk_options(p: argparse.ArgumentParser, verb: str) -> None:
    p.add_argument("--state", choices=STATES, required=True)
    many = p.add_mutually_exclusive_group()
    many.add_argument("--limit", type=_u32, metavar="N", help=f"{verb} at most N jobs")
    many.add_argument("--all", action="store_true", help=f"{verb} every job in that state (the default)")
    p.add_argument("--dry-run", action="store_true", help=f"only count the jobs it would {verb}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beanstalk-py admin",
        description="Look inside a running beanstalk-py or beanstalkd and act on it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--addr", metavar="HOST:PORT", help="the daemon's TCP address (default 127.0.0.1:11300)")
    where.add_argument("--unix", metavar="PATH", help="the daemon's unix socket")
    parser.add_argument("--url", metavar="URL",
                        help="the daemon's HTTP API (its --http): http://HOST:PORT, https://... or unix:PATH; "
                        "used by jobs, move, clear and export")
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token-file", metavar="FILE",
                       help="a file (mode 600) holding the bearer token for --url")
    token.add_argument("--token", metavar="TOKEN",
                       help=f"the bearer token for --url (seen by ps: prefer --token-file or ${ENV_TOKEN})")
    parser.add_argument("--timeout", type=_seconds, default=5.0, metavar="SECONDS",
                        help="for connecting and for each reply (default 5)")
    parser.add_argument("--json", action="store_true", dest="json_global",
                        help="JSON output for read commands (also accepted after the command)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Handler, help: str, json: bool = False,
                description: str = "") -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=description or help)
        p.set_defaults(handler=handler)
        if json:
            p.add_argument("--json", action="store_true", help="print JSON")
        return p

    command("stats", cmd_stats, "every field of the server's stats", json=True)
    command("tubes", cmd_tubes, "a table of every tube: jobs by state, pause, clients", json=True,
            description="One row per tube, by name: ready, reserved, delayed, buried and urgent jobs, "
            "the pause and its time left, and the connections waiting on, using and watching it "
            "(this command's own connection left out).")
    p = command("top", cmd_top, "a live view of the server and its tubes (q or Ctrl-C quits)",
                description="A full-screen view refreshed every second: uptime, jobs, connections and "
                "put/reserve/delete rates, then the tubes with their put and delete rates. q or Ctrl-C "
                "quits. When stdout is not a terminal, prints plain frames instead.")
    p.add_argument("-d", "--interval", type=_seconds, default=1.0, metavar="SECONDS",
                   help="time between refreshes (default 1)")
    p.add_argument("-n", "--iterations", type=_positive, metavar="N", help="stop after N refreshes")

    for name, handler, help, arg in (
        ("peek", cmd_peek, "show a job by id", "id"),
        ("peek-ready", cmd_peek_state, "show the next ready job of a tube", "tube"),
        ("peek-delayed", cmd_peek_state, "show the delayed job of a tube due first", "tube"),
        ("peek-buried", cmd_peek_state, "show the oldest buried job of a tube", "tube"),
    ):
        p = command(name, handler, help, json=True,
                    description=f"{help[0].upper()}{help[1:]}: 'id: N', then the body. --raw prints the "
                    "body only, byte for byte; --json gives {id, body} (base64 with body_b64 when not UTF-8).")
        if arg == "id":
            p.add_argument("id", type=_job_id, metavar="ID")
        else:
            p.add_argument("tube", type=_tube, metavar="TUBE")
        p.add_argument("--raw", action="store_true", help="the body only, nothing added")

    p = command("status", cmd_status, "a job's state: ready, delayed, reserved, buried, or unknown", json=True,
                description="Prints the job's state from stats-job, or 'unknown' (exit 1) when the "
                "server does not know the job. --json prints all of stats-job.")
    p.add_argument("id", type=_job_id, metavar="ID")

    p = command("kick", cmd_kick, "kick up to N buried (else delayed) jobs of a tube")
    p.add_argument("tube", type=_tube, metavar="TUBE")
    p.add_argument("count", type=_u32, metavar="N")
    p = command("kick-job", cmd_kick_job, "kick one buried or delayed job")
    p.add_argument("id", type=_job_id, metavar="ID")
    p = command("delete", cmd_delete, "delete a ready, delayed or buried job")
    p.add_argument("id", type=_job_id, metavar="ID")
    p = command("pause", cmd_pause, "pause a tube for SECONDS (0 ends a pause)")
    p.add_argument("tube", type=_tube, metavar="TUBE")
    p.add_argument("seconds", type=_u32, metavar="SECONDS")

    p = command("put", cmd_put, "put a job whose body is read from stdin; prints its id")
    p.add_argument("tube", type=_tube, metavar="TUBE")
    p.add_argument("--pri", type=_u32, default=1024, help="priority, 0 most urgent (default 1024)")
    p.add_argument("--delay", type=_u32, default=0, help="seconds before it is ready (default 0)")
    p.add_argument("--ttr", type=_u32, default=60, help="seconds a worker may hold it (default 60)")

    command("drain", cmd_drain, "put the daemon in drain mode (SIGUSR1; a daemon on this machine only)",
            description="Reads the daemon's pid from stats and sends it SIGUSR1, after checking that "
            "the address is one of this machine's and that the process is beanstalk-py or "
            "beanstalkd. From then on puts answer DRAINING; it cannot be undone but by a restart.")

    p = command("clear", cmd_clear, "delete the ready, delayed or buried jobs of a tube",
                description="With --url, one call of the daemon's clear endpoint. Otherwise peeks and "
                "deletes over the beanstalk protocol, one job after another, at most the number of jobs "
                "in that state when it started (or --limit), with a progress bar on stderr when it is a "
                "terminal. Reserved jobs are never touched.")
    p.add_argument("tube", type=_tube, metavar="TUBE")
    _bulk_options(p, "delete")

    p = command("jobs", cmd_jobs, "list a tube's jobs in serving order (needs --url)", json=True,
                description="A table of the tube's jobs in one state, in the order the queue serves them: "
                "id, priority, age, time left (delayed or reserved), size and the start of the body. "
                "--json prints the API's JSON, one job a line. Needs the daemon's HTTP API (--url).")
    p.add_argument("tube", type=_tube, metavar="TUBE")
    p.add_argument("--state", choices=STATES + ("reserved",), default="ready", help="(default ready)")
    p.add_argument("--limit", type=_positive, metavar="N", help=f"list at most N jobs (default {DEFAULT_JOBS})")
    p.add_argument("--page", type=_positive, default=MAX_PAGE, metavar="N",
                   help=f"jobs asked for per request (default and most {MAX_PAGE})")

    p = command("move", cmd_move, "move a tube's jobs in one state to another tube (needs --url)",
                description="One call of the daemon's move endpoint: the jobs keep their state, priority "
                "and time left. Reserved jobs are never moved. Needs the daemon's HTTP API (--url).")
    p.add_argument("source", type=_tube, metavar="FROM")
    p.add_argument("target", type=_tube, metavar="TO")
    _bulk_options(p, "move")

    p = command("export", cmd_export, "every job as JSON lines, from a binlog directory or the HTTP API",
                description="Writes one JSON object per job, by id: id, tube, state, pri, delay (seconds "
                "left for delayed jobs), ttr, body (base64 with body_b64 when not UTF-8). --binlog DIR "
                "reads a beanstalk-py (or beanstalkd) binlog directory, files only: a running daemon "
                "keeps its lock. Otherwise --url asks the daemon's HTTP API for every job (a body over "
                "64 KiB is read with peek on --addr/--unix). Reserved jobs are exported as ready, as a "
                "restart would bring them back.")
    p.add_argument("file", metavar="FILE", help="where to write; - for stdout")
    p.add_argument("--binlog", metavar="DIR", help="the daemon's -b directory")
    p.add_argument("--store", metavar="URL",
                   help="a Redis store (redis://HOST:PORT/DB, as the front ends' --store): read with "
                   "read-only calls, in chunks; buried jobs carry their kick order (bury_seq) and "
                   "paused tubes follow the jobs as {\"tube\": T, \"pause\": SECONDS} lines")
    p = command("import", cmd_import, "put every job of a JSON lines file (as written by export)",
                description="Puts each job into its tube with its pri, delay and ttr; buried jobs are "
                "put, taken with reserve-job and buried; pause lines are applied with pause-tube. Jobs "
                "get new ids. Works against beanstalkd 1.12. With --store, writes the jobs straight into "
                "a Redis store instead, keeping their ids (the store's next id goes past the largest), "
                "their bury order and the tubes' pauses; every line is checked first (a bad file writes "
                "nothing) and a store that holds jobs is refused unless --merge.")
    p.add_argument("file", metavar="FILE", help="JSON lines; - for stdin")
    p.add_argument("--store", metavar="URL", help="a Redis store (redis://HOST:PORT/DB) to write into")
    p.add_argument("--merge", action="store_true",
                   help="with --store: add to a store that holds jobs (a job whose id is there is skipped, "
                   "so an interrupted import can be run again)")
    p.add_argument("--new-ids", action="store_true",
                   help="with --store: give every job a new id from the store's counter, in file order")

    p = command("migrate", cmd_migrate, "move every job from a binlog directory into a Redis store, or back",
                description="A one-shot move, with the daemon stopped: --from-binlog DIR --to-store URL reads DIR "
                "as the daemon's start-up does (ids, states, priorities, time left, bury order) and writes "
                "the jobs into the store (refused if it holds jobs, unless --merge); DIR is left as it was. "
                "--from-store URL --to-binlog DIR writes every job of the store into a new binlog directory "
                "(created, or empty of binlog files) that beanstalk-py -b DIR serves. Reserved jobs move "
                "as ready. The next id is kept past every id the source gave out.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-binlog", metavar="DIR", help="a -b directory (no daemon running on it)")
    source.add_argument("--from-store", metavar="URL", help="a Redis store, redis://HOST:PORT/DB")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-store", metavar="URL", help="a Redis store, redis://HOST:PORT/DB")
    target.add_argument("--to-binlog", metavar="DIR", help="a new -b directory")
    p.add_argument("--merge", action="store_true", help="with --to-store: add to a store that holds jobs")
    return parser


def parse(argv: list[str]) -> tuple[Context, argparse.Namespace]:
    """SystemExit (argparse's) for bad arguments and --help; UsageError for the rest."""
    args = build_parser().parse_args(argv)
    address = args.unix if args.unix is not None else parse_addr(args.addr or "")
    endpoint = parse_url(args.url) if args.url is not None else None
    token = args.token
    if args.token_file is not None:
        token = read_token_file(args.token_file)
    if endpoint is None and token is not None:
        raise UsageError("--token and --token-file go with --url (the HTTP API)")
    if endpoint is not None and token is None:
        token = os.environ.get(ENV_TOKEN) or None
    if token is not None and (not token.isprintable() or " " in token):
        raise UsageError("the token holds spaces or control characters")
    ctx = Context(address, args.timeout, bool(args.json_global or getattr(args, "json", False)),
                  endpoint=endpoint, token=token, address_given=args.addr is not None or args.unix is not None)
    return ctx, args


def run(argv: list[str]) -> int:
    try:
        ctx, args = parse(argv)
        handler: Handler = args.handler
        return handler(ctx, args)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    except AdminError as exc:
        print(f"beanstalk-py admin: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`export - | head`): stop quietly, and keep the
        # interpreter from complaining when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_FAILED
