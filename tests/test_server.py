"""The daemon over real sockets: start-up, signals, sockets, and hostile clients."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import Daemon, beanstalk_py_argv, free_port, start_beanstalk_py

from beanstalk_py import build


def ask(sock: socket.socket, data: bytes, until: bytes = b"\r\n", limit: float = 5.0) -> bytes:
    sock.sendall(data)
    return read_until(sock, until, limit)


def read_until(sock: socket.socket, until: bytes, limit: float = 5.0) -> bytes:
    buf = b""
    deadline = time.monotonic() + limit
    while not buf.endswith(until):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def run_cli(*args: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "beanstalk_py", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_exit_cleanly(signum: int) -> None:
    daemon = start_beanstalk_py()
    with daemon.connect() as sock:
        assert ask(sock, b"put 0 0 1 1\r\nx\r\n") == b"INSERTED 1\r\n"
    daemon.proc.send_signal(signum)
    assert daemon.proc.wait(timeout=10) == 0


def test_sigterm_while_serving_during_start_up_exits_cleanly() -> None:
    """A client served while trio is still being imported, then SIGTERM at once
    (what greenstalk's fixture does): the daemon always exits with status 0.
    Before the signal handlers only took note, 1 start in 60 ran on."""
    for _ in range(10):
        port = free_port()
        proc = subprocess.Popen(beanstalk_py_argv(port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    sock = socket.create_connection(("127.0.0.1", port))
                    break
                except OSError:
                    assert time.monotonic() < deadline
                    time.sleep(0.002)
            with sock:
                assert ask(sock, b"put 0 0 1 1\r\nx\r\n") == b"INSERTED 1\r\n"
                proc.terminate()
                assert proc.wait(timeout=10) == 0, proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_default_address_is_announced() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "beanstalk_py", "-p", str(port)], stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stderr.readline()
        assert f"listening on 127.0.0.1:{port}" in line and "0.0.0.0" in line
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_sigusr1_enters_drain_mode(server: Daemon) -> None:
    with server.connect() as sock:
        server.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while b"draining: true" not in ask(sock, b"stats\r\n", until=b"\n\r\n"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert ask(sock, b"put 0 0 1 1\r\nx\r\n") == b"DRAINING\r\n"
        assert ask(sock, b"put 0 0 1 1\r\nxyz\r\n", until=b"COMMAND\r\n") == (
            b"EXPECTED_CRLF\r\nUNKNOWN_COMMAND\r\n"
        )
        assert ask(sock, b"use foo\r\n") == b"USING foo\r\n"


def test_usage_errors_and_version() -> None:
    result = run_cli("-x")
    assert result.returncode == 5 and "unknown flag: -x" in result.stderr
    result = run_cli("-v")
    assert result.returncode == 0 and result.stdout.startswith("beanstalk-py")
    assert result.stdout.splitlines()[1] == build.describe()  # the build these tests import
    result = run_cli("-h")
    assert result.returncode == 0 and "-z BYTES" in result.stderr


def test_binlog_dir_missing_exits_10(tmp_path) -> None:
    """As beanstalkd: -b needs an existing directory (it cannot lock DIR/lock otherwise)."""
    result = run_cli("-b", str(tmp_path / "missing"), "-l", "127.0.0.1", "-p", str(free_port()))
    assert result.returncode == 10 and "lock" in result.stderr


def test_cannot_listen_exits_111() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("-l", "127.0.0.1", "-p", str(port))
    assert result.returncode == 111


def test_unix_socket_and_stale_socket_replaced() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bs.sock")
        for _ in range(2):  # the second start finds the first one's socket file
            daemon = Daemon([sys.executable, "-m", "beanstalk_py", "-l", f"unix:{path}"], unix_path=path)
            daemon.start()
            try:
                with daemon.connect() as sock:
                    assert ask(sock, b"put 0 0 1 1\r\na\r\npeek 1\r\n", until=b"a\r\n") == (
                        b"INSERTED 1\r\nFOUND 1 1\r\na\r\n"
                    )
            finally:
                assert daemon.stop() == 0
            assert os.path.exists(path)  # never removed on exit, like beanstalkd
        _, err = daemon.proc.communicate()
        assert b"removing existing local socket" in err


def test_unix_path_that_is_not_a_socket() -> None:
    with tempfile.NamedTemporaryFile() as regular:
        result = run_cli("-l", f"unix:{regular.name}")
    assert result.returncode == 111


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    port = free_port()
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    daemon = Daemon(beanstalk_py_argv(port)[:3] + ["-l", "::1", "-p", str(port)], host="::1", port=port)
    daemon.start()
    try:
        with daemon.connect() as sock:
            assert ask(sock, b"list-tube-used\r\n") == b"USING default\r\n"
    finally:
        daemon.stop()


def test_systemd_socket_activation() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    fd = listener.fileno()

    def move_to_fd3() -> None:
        os.dup2(fd, 3)
        os.set_inheritable(3, True)

    script = f'export LISTEN_PID=$$ LISTEN_FDS=1; exec "{sys.executable}" -m beanstalk_py -p 1'
    proc = subprocess.Popen(
        ["sh", "-c", script], preexec_fn=move_to_fd3, pass_fds=(fd, 3), stderr=subprocess.PIPE
    )
    listener.close()
    try:
        daemon = Daemon([], port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                sock = daemon.connect()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        with sock:
            assert ask(sock, b"put 0 0 1 2\r\nhi\r\n") == b"INSERTED 1\r\n"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert b"inherited listen fd; ignoring option: -p 1" in err


@pytest.mark.parametrize("io_mode", ["epoll", "tasks"])
def test_every_inherited_socket_is_served(io_mode: str, tmp_path) -> None:
    """A socket unit with a TCP and a unix address: both are served (beanstalkd serves the first)."""
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(16)
    path = str(tmp_path / "q.sock")
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(path)
    unix.listen(16)
    a, b = tcp.fileno(), unix.fileno()

    def move_to_fds_3_and_4() -> None:
        os.dup2(a, 3)
        os.dup2(b, 4)
        os.set_inheritable(3, True)
        os.set_inheritable(4, True)

    script = f'export LISTEN_PID=$$ LISTEN_FDS=2; exec "{sys.executable}" -m beanstalk_py'
    proc = subprocess.Popen(["sh", "-c", script], preexec_fn=move_to_fds_3_and_4, pass_fds=(a, b, 3, 4),
                            stderr=subprocess.PIPE, env=dict(os.environ, BEANSTALK_PY_IO=io_mode))
    port = tcp.getsockname()[1]
    tcp.close()
    unix.close()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                over_tcp = Daemon([], port=port).connect()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        over_unix = Daemon([], unix_path=path).connect()
        with over_tcp, over_unix:
            assert ask(over_tcp, b"put 0 0 60 3\r\ntcp\r\n") == b"INSERTED 1\r\n"
            assert ask(over_unix, b"reserve\r\n", until=b"tcp\r\n") == b"RESERVED 1 3\r\ntcp\r\n"
            assert ask(over_tcp, b"stats\r\n", until=b"\n\r\n").count(b"current-connections: 2\n") == 1
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert b"ignoring all but the first" not in err


def test_verbose_logs_connections() -> None:
    daemon = start_beanstalk_py("-V")
    try:
        daemon.connect().close()
        time.sleep(0.2)
    finally:
        daemon.stop()
    out = daemon.proc.stdout.read().decode()
    assert out.startswith(f"pid {daemon.proc.pid}\n{build.describe()}\n")  # the build these tests import
    assert "bind " in out and "accept " in out and "close " in out


def test_job_too_big_with_z() -> None:
    daemon = start_beanstalk_py("-z", "10")
    try:
        with daemon.connect() as sock:
            assert ask(sock, b"put 0 0 1 11\r\ndelete 9999\r\nput 0 0 1 1\r\nx\r\n", until=b"1\r\n") == (
                b"JOB_TOO_BIG\r\nINSERTED 1\r\n"
            )
    finally:
        daemon.stop()


def test_line_without_crlf_does_not_grow_memory(server: Daemon) -> None:
    with server.connect() as sock:
        assert ask(sock, b"stats\r\n", until=b"\n\r\n")
        before = rss_kib(server.proc.pid)
        chunk = b"z" * 65536
        for _ in range(320):  # 20 MiB without a line end
            sock.sendall(chunk)
        assert ask(sock, b"\r\nlist-tube-used\r\n", until=b"default\r\n") == (
            b"BAD_FORMAT\r\nUSING default\r\n"
        )
        assert rss_kib(server.proc.pid) - before < 10 * 1024


def test_client_that_never_reads_cannot_grow_memory(server: Daemon) -> None:
    body = b"b" * 60000
    with server.connect() as hog, server.connect() as other:
        assert ask(hog, b"put 0 0 60 %d\r\n%s\r\n" % (len(body), body)) == b"INSERTED 1\r\n"
        before = rss_kib(server.proc.pid)
        hog.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 3
        command = b"peek 1\r\n" * 4096
        while time.monotonic() < deadline and sent < 20 * 1024 * 1024:
            try:
                sent += hog.send(command)
            except BlockingIOError:
                time.sleep(0.01)
        # Each peek answers with 60 KB: unbounded buffering would need GBs.
        assert sent > 64 * 1024
        assert ask(other, b"stats-job 1\r\n", until=b"\n\r\n").startswith(b"OK ")
        assert rss_kib(server.proc.pid) - before < 64 * 1024


def test_many_idle_connections(server: Daemon) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    count = min(1000, soft - 100)
    socks = []
    try:
        for _ in range(count):
            socks.append(server.connect())
        with server.connect() as sock:
            deadline = time.monotonic() + 10
            while True:
                stats = ask(sock, b"stats\r\n", until=b"\n\r\n")
                if b"current-connections: %d\n" % (count + 1) in stats:
                    break
                assert time.monotonic() < deadline, stats
                time.sleep(0.05)
            assert ask(sock, b"put 0 0 1 1\r\nx\r\n") == b"INSERTED 1\r\n"
    finally:
        for sock in socks:
            sock.close()


def test_out_of_file_descriptors_refuses_and_keeps_serving() -> None:
    port = free_port()

    def low_fd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    proc = subprocess.Popen(
        beanstalk_py_argv(port), stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=low_fd_limit
    )
    daemon = Daemon([], port=port, proc=proc)
    socks = []
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                first = daemon.connect()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        socks.append(first)
        assert ask(first, b"put 0 0 1 1\r\nx\r\n") == b"INSERTED 1\r\n"
        refused = 0
        for _ in range(100):
            sock = daemon.connect()
            socks.append(sock)
            try:
                reply = ask(sock, b"list-tube-used\r\n", limit=2)
            except OSError:
                reply = b""
            if reply != b"USING default\r\n":
                refused += 1
        assert refused > 0
        # The first connection still works, and its job is intact.
        assert ask(first, b"peek 1\r\n", until=b"x\r\n") == b"FOUND 1 1\r\nx\r\n"
        for sock in socks[1:]:
            sock.close()
        time.sleep(0.3)
        with daemon.connect() as again:
            assert ask(again, b"peek 1\r\n", until=b"x\r\n") == b"FOUND 1 1\r\nx\r\n"
    finally:
        for sock in socks:
            sock.close()
        daemon.stop()
    _, err = proc.communicate()
    assert b"refusing new connections" in err
    assert proc.returncode == 0


def test_user_option_drops_privileges() -> None:
    if os.geteuid() != 0:
        pytest.skip("-u needs root to switch users")
    import pwd

    nobody = pwd.getpwnam("nobody")
    daemon = start_beanstalk_py("-u", "nobody")
    try:
        with open(f"/proc/{daemon.proc.pid}/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        assert fields["Uid"].split()[0] == str(nobody.pw_uid)
        assert fields["Gid"].split()[0] == str(nobody.pw_gid)
        with daemon.connect() as sock:
            assert ask(sock, b"put 0 0 1 1\r\nx\r\n") == b"INSERTED 1\r\n"
    finally:
        daemon.stop()


def test_unknown_user_exits_33() -> None:
    result = run_cli("-u", "no-such-user-here", "-p", str(free_port()))
    assert result.returncode == 33 and "no such user" in result.stderr


@pytest.mark.parametrize("io_mode", ["epoll", "tasks"])
def test_both_io_paths_serve_blocking_reserves(io_mode: str) -> None:
    """The Linux epoll loop and the portable task-per-connection path behave alike."""
    port = free_port()
    daemon = Daemon(beanstalk_py_argv(port), port=port, env={"BEANSTALK_PY_IO": io_mode}).start()
    try:
        with daemon.connect() as worker, daemon.connect() as producer:
            worker.sendall(b"reserve\r\nlist-tube-used\r\n")
            time.sleep(0.1)
            assert ask(producer, b"put 5 0 10 3\r\nabc\r\n") == b"INSERTED 1\r\n"
            assert read_until(worker, b"default\r\n") == b"RESERVED 1 3\r\nabc\r\nUSING default\r\n"
            assert ask(worker, b"reserve-with-timeout 1\r\n", limit=3) == b"TIMED_OUT\r\n"
            assert ask(worker, b"delete 1\r\n") == b"DELETED\r\n"
            big = b"q" * 200000
            assert ask(producer, b"put 0 0 10 %d\r\n%s\r\n" % (len(big), big)) == b"JOB_TOO_BIG\r\n"
            for _ in range(3):
                assert ask(producer, b"put 0 0 10 3\r\nxyz\r\n").startswith(b"INSERTED")
            worker.sendall(b"peek 2\r\n" * 200)
            expected = b"FOUND 2 3\r\nxyz\r\n" * 200
            assert read_until(worker, expected) == expected
    finally:
        assert daemon.stop() == 0


def test_internal_error_costs_one_connection_not_the_server(monkeypatch) -> None:
    """An unexpected exception while serving a client closes that client only."""
    port = free_port()
    # Make `stats-job 999` raise inside the daemon via a sitecustomize-free hook:
    # start the daemon in a wrapper that patches the stats-job handler.
    code = (
        "import sys; from beanstalk_py import conn; "
        "orig, counted = conn._DISPATCH['stats-job']\n"
        "def boom(self, request, now):\n"
        "    if request[1] == 999: raise RuntimeError('injected')\n"
        "    return orig(self, request, now)\n"
        "conn._DISPATCH['stats-job'] = (boom, counted)\n"
        "from beanstalk_py.main import main; sys.exit(main(sys.argv[1:]))"
    )
    for io_mode in ("epoll", "tasks"):
        daemon = Daemon(
            [sys.executable, "-c", code, "-l", "127.0.0.1", "-p", str(port)],
            port=port,
            env={"BEANSTALK_PY_IO": io_mode},
        ).start()
        try:
            with daemon.connect() as good, daemon.connect() as bad:
                assert ask(good, b"put 0 0 10 1\r\nx\r\n") == b"INSERTED 1\r\n"
                assert ask(bad, b"stats-job 999\r\n") == b""  # closed
                assert ask(good, b"peek 1\r\n", until=b"x\r\n") == b"FOUND 1 1\r\nx\r\n"
        finally:
            assert daemon.stop() == 0
        assert b"internal error on connection" in daemon.proc.stderr.read()
        port = free_port()
