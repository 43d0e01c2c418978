"""A private PostgreSQL server for development and tests, bound to 127.0.0.1 only.

The cluster lives in ``<data_dir>/pgdata`` and is created on first start; the server log is
``<data_dir>/postgres.log``. Binaries come from the ``pgserver`` wheel (real PostgreSQL 16), else
from ``pg_config --bindir`` or ``PATH``. PostgreSQL refuses to run as root, so under root the
cluster belongs to, and the server runs as, the system user ``meterflow-pg``.

Every connection, over TCP or the unix socket, must give a password (scram-sha-256): each role's
is generated on first start, kept in ``<data_dir>/<role>.password`` (mode 0600) and reused after.
A cluster an earlier version left on trust gets its passwords on its next start. The unix socket
lives in ``<data_dir>/socket`` (mode 0700: the server's user only).

The server gets SIGINT (a fast shutdown) from the kernel if the launcher dies without stopping it.
A server left running on the same cluster by an earlier launcher is stopped before starting.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self, TypedDict
from urllib.parse import quote

from deploy.processes import child_pids, die_with_parent, is_running, signal_quietly, wait_gone
from meterflow.errors import LauncherError

logger = logging.getLogger(__name__)

SYSTEM_USER = "meterflow-pg"
SUPERUSER = "postgres"
HOST = "127.0.0.1"
_PROGRAMS = ("initdb", "postgres", "psql")
# sun_path is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107

_PG_HBA_SCRAM = """\
# Written by meterflow's launcher on every start: a password for everyone, over the private
# socket and loopback only.
local   all   all                  scram-sha-256
host    all   all   127.0.0.1/32   scram-sha-256
"""

_PG_HBA_TRUST = """\
# Written by meterflow's launcher on every start (password_auth off: tests only): trust, but
# only over the private socket and loopback.
local   all   all                  trust
host    all   all   127.0.0.1/32   trust
"""

# Creates the application role and database unless they exist, and (re)sets the role's
# password; fed to psql on stdin.
_BOOTSTRAP_SQL = """\
SELECT format('CREATE ROLE %I LOGIN CREATEDB', :'app_user')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_user') \\gexec
SELECT format('ALTER ROLE %I PASSWORD %L', :'app_user', :'app_password')
WHERE :'app_password' <> '' \\gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'app_db', :'app_user')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'app_db') \\gexec
"""


@dataclass(frozen=True, slots=True)
class PostgresServerConfig:
    """Where and how to run the server; ``durable=False`` trades crash safety for speed (tests)."""

    data_dir: Path
    port: int
    database: str = "meterflow"
    user: str = "meterflow"
    durable: bool = True
    # Off: trust on the socket and loopback, no passwords (the test suite's throwaway servers).
    password_auth: bool = True
    extra_settings: Mapping[str, str] = field(default_factory=dict)
    # None: pgserver's binaries, else pg_config --bindir, else PATH.
    bin_dir: Path | None = None

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        return self.data_dir / "socket"

    def password_file(self, role: str) -> Path:
        return self.data_dir / f"{role}.password"


# Shared buffers: a quarter of the machine's memory, within these bounds (MiB).
SHARED_BUFFERS_MIN_MB = 128
SHARED_BUFFERS_MAX_MB = 8192


def shared_buffers_mb(memory_bytes: int) -> int:
    """Shared buffers for a machine with ``memory_bytes`` of memory: a quarter of it, at least
    :data:`SHARED_BUFFERS_MIN_MB` and at most :data:`SHARED_BUFFERS_MAX_MB`."""
    return max(SHARED_BUFFERS_MIN_MB, min(SHARED_BUFFERS_MAX_MB, memory_bytes // 4 // 2**20))


def machine_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def server_settings(config: PostgresServerConfig) -> dict[str, str]:
    """The ``-c`` settings the postmaster runs with. A test server (not durable) is small and
    skips every fsync.

    A durable server (``meterflow up``) is sized for the fold: its hot indexes (the dedupe set's
    primary key above all, where inserts land at random) stay in shared buffers as long as they
    fit, checkpoints come every 15 minutes rather than every few gigabytes of WAL, and full-page
    images are compressed: each checkpoint makes the next change to every page write the whole
    page to the WAL, so at a high event rate frequent checkpoints multiply the WAL several
    times (measured in the README's "The fold at scale"). Under sustained load the WAL may then
    take up to ``max_wal_size`` (16 GB) of disk.
    """
    socket_dir = str(config.socket_dir)
    if len(f"{socket_dir}/.s.PGSQL.{config.port}") > _MAX_SOCKET_PATH:
        socket_dir = ""  # too long for a unix socket path: TCP on loopback only
    settings = {
        "listen_addresses": HOST,
        "port": str(config.port),
        "unix_socket_directories": socket_dir,
        "max_connections": "200",
        "min_wal_size": "256MB",
        "checkpoint_timeout": "15min",
        "max_parallel_workers_per_gather": "1",
        "password_encryption": "scram-sha-256",
        "timezone": "UTC",
        "log_timezone": "UTC",
        "log_line_prefix": "%m [%p] %q%u@%d ",
    }
    if config.durable:
        settings |= {
            "shared_buffers": f"{shared_buffers_mb(machine_memory_bytes())}MB",
            "max_wal_size": "16GB",
            "wal_compression": "on",
        }
    else:
        settings |= {
            "shared_buffers": f"{SHARED_BUFFERS_MIN_MB}MB",
            "max_wal_size": "2GB",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
    settings.update(config.extra_settings)
    return settings


def find_bin_dir() -> Path:
    """The directory holding ``initdb``, ``postgres`` and ``psql``."""
    candidates: list[Path] = []
    # find_spec locates pgserver without importing it (its import has side effects).
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "pginstall" / "bin" for p in spec.submodule_search_locations]
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            )
            candidates.append(Path(out.stdout.strip()))
    if postgres := shutil.which("postgres"):
        candidates.append(Path(postgres).resolve().parent)  # through /usr/local/bin symlinks
    for candidate in candidates:
        if all(os.access(candidate / name, os.X_OK) for name in _PROGRAMS):
            return candidate
    raise LauncherError(
        "no PostgreSQL server binaries found: install the pgserver package, or PostgreSQL "
        f"with {', '.join(_PROGRAMS)} in `pg_config --bindir` or on PATH"
    )


class _Credentials(TypedDict):
    user: int | None
    group: int | None
    extra_groups: list[int] | None


def _credentials(account: pwd.struct_passwd | None) -> _Credentials:
    """``subprocess`` arguments that run a child as ``account`` (None: as ourselves)."""
    if account is None:
        return {"user": None, "group": None, "extra_groups": None}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    """The account the server runs as when we are root, created on first use."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        shell = "/usr/sbin/nologin" if Path("/usr/sbin/nologin").exists() else "/bin/false"
        argv = ["useradd", "--system", "--user-group", "--no-create-home"]
        argv += ["--home-dir", "/nonexistent", "--shell", shell, name]
        try:
            result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
            detail = result.stderr.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            detail = str(exc)
        try:  # a concurrent launcher may have created it first; either way it must exist now
            entry = pwd.getpwnam(name)
        except KeyError as exc:
            raise LauncherError(f"cannot create system user {name!r}: {detail}") from exc
    return entry


def _ensure_traversable(directory: Path) -> None:
    """Let other users pass through ``directory`` and its parents (execute bit only, no listing)."""
    resolved = directory.resolve()
    for step in (resolved, *resolved.parents):
        mode = step.stat().st_mode
        if not mode & stat.S_IXOTH:
            logger.warning("adding o+x to %s so %s can reach %s", step, SYSTEM_USER, directory)
            step.chmod(mode | stat.S_IXOTH)


def _child_env(password: str | None = None) -> dict[str, str]:
    # PG* variables (PGDATA, PGPORT, PGOPTIONS, ...) would silently redirect our tools.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env |= {"LC_ALL": "C", "TZ": "UTC"}
    if password:
        env["PGPASSWORD"] = password  # the environment of our own child only, never argv
    return env


def read_password(path: Path) -> str | None:
    """A password file's content, or None when there is none (or it is empty)."""
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def write_password(path: Path, password: str) -> None:
    """Write ``password`` to ``path`` atomically, readable by its owner only."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)  # whatever the umask
        os.write(descriptor, f"{password}\n".encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(partial, path)


def new_password() -> str:
    # URL-safe, so it goes into a DSN unquoted; 256 bits.
    return secrets.token_urlsafe(32)


def _ensure_private_dir(directory: Path, account: pwd.struct_passwd | None) -> None:
    """``directory`` exists, belongs to ``account`` (or us) and only it may enter (0700)."""
    directory.mkdir(mode=0o700, exist_ok=True)
    if account is not None:
        os.chown(directory, account.pw_uid, account.pw_gid)
    directory.chmod(0o700)


def _read_postmaster_pid(path: Path) -> tuple[int, str] | None:
    """The pid (line 1) and status (line 8: ``starting``/``ready``/``stopping``) of a lock file."""
    try:
        lines = path.read_text(errors="replace").splitlines()
        return int(lines[0]), lines[7].strip() if len(lines) > 7 else ""
    except (OSError, ValueError, IndexError):
        return None


def _is_live_postgres(pid: int) -> bool:
    if not is_running(pid):
        return False
    try:  # a stale file may name a pid that now belongs to some other program
        return Path(f"/proc/{pid}/comm").read_text().strip() == "postgres"
    except OSError:
        return True


def _kill_postmaster(pid: int) -> None:
    """SIGKILL a postmaster and its backends, and wait until all of them are gone."""
    # Every backend is its own session leader, so killpg would miss them; collect them before
    # the postmaster dies and they are reparented.
    pids = [*child_pids(pid), pid]
    for each in pids:
        signal_quietly(each, signal.SIGKILL)
    for each in pids:
        wait_gone(each, 10.0)


class LocalPostgresServer:
    """Start with :meth:`start` (or ``with``); :meth:`stop` does a fast shutdown."""

    def __init__(
        self, config: PostgresServerConfig, say: Callable[[str], None] = logger.warning
    ) -> None:
        self.config = config
        self._say = say
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def dsn(self) -> str:
        """The application role on its database, with its password once started."""
        c = self.config
        return _dsn(c.user, self._password(c.user), c.port, c.database)

    @property
    def admin_dsn(self) -> str:
        """Superuser on the ``postgres`` database: for CREATE/DROP DATABASE."""
        return _dsn(SUPERUSER, self._password(SUPERUSER), self.config.port, "postgres")

    def _password(self, role: str) -> str | None:
        if not self.config.password_auth:
            return None
        return read_password(self.config.password_file(role))

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process and self._process.poll() is None else None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout_s: float = 60.0) -> None:
        """Initialise the cluster if needed, start the server, create the role and database."""
        if self.pid is not None:
            return
        deadline = time.monotonic() + timeout_s
        bin_dir = self.config.bin_dir or find_bin_dir()
        account = _ensure_system_user(SYSTEM_USER) if os.geteuid() == 0 else None
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        if account is not None:
            _ensure_traversable(self.config.data_dir)
            _ensure_traversable(bin_dir)
        if not self._is_initialised():
            self._initdb(bin_dir, account, deadline)
        self._stop_leftover_postmaster(deadline)
        _ensure_private_dir(self.config.socket_dir, account)
        self._write_pg_hba(account)
        if self.config.password_auth:
            self._ensure_superuser_password(bin_dir, account, deadline)
        process = self._launch(bin_dir, account)
        try:
            self._wait_until_ready(process, deadline, timeout_s)
            self._bootstrap(bin_dir, deadline)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout_s: float = 30.0) -> None:
        """Fast shutdown (SIGINT); after ``timeout_s``, SIGKILL the postmaster and its children."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "postgres (pid %d) ignored SIGINT for %ss; killing", process.pid, timeout_s
                )
                _kill_postmaster(process.pid)
                process.wait()

    def _is_initialised(self) -> bool:
        pgdata = self.config.pgdata
        if (pgdata / "PG_VERSION").is_file() and (pgdata / "global" / "pg_control").is_file():
            return True
        if pgdata.is_dir() and any(pgdata.iterdir()):
            raise LauncherError(f"{pgdata} exists but is not a PostgreSQL cluster; remove it")
        return False

    def _initdb(self, bin_dir: Path, account: pwd.struct_passwd | None, deadline: float) -> None:
        # initdb into a sibling directory and rename it into place, so an interrupted initdb never
        # leaves a half-made cluster where the next start would trust it.
        pgdata = self.config.pgdata
        staging = Path(tempfile.mkdtemp(prefix="pgdata.initdb-", dir=self.config.data_dir))
        try:
            if account is not None:
                os.chown(staging, account.pw_uid, account.pw_gid)
            argv = [str(bin_dir / "initdb"), "-D", str(staging), "-U", SUPERUSER, "--auth=trust"]
            argv += ["--encoding=UTF8", "--locale=C", "--no-instructions"]
            if not self.config.durable:
                argv.append("--no-sync")
            self._run(argv, account, deadline, cwd=staging)
            with contextlib.suppress(FileNotFoundError):
                pgdata.rmdir()  # only ever empty here; rename cannot replace it on every OS
            staging.rename(pgdata)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _write_pg_hba(self, account: pwd.struct_passwd | None) -> None:
        """Rewritten on every start, so a cluster left on trust moves to passwords."""
        path = self.config.pgdata / "pg_hba.conf"
        path.write_text(_PG_HBA_SCRAM if self.config.password_auth else _PG_HBA_TRUST)
        path.chmod(0o600)
        if account is not None:
            os.chown(path, account.pw_uid, account.pw_gid)

    def _ensure_superuser_password(
        self, bin_dir: Path, account: pwd.struct_passwd | None, deadline: float
    ) -> None:
        """Give the superuser a generated password unless its file holds one already.

        Set in single-user mode, before the postmaster listens, so neither a new cluster nor
        one left on trust is ever reachable without it. The file is written only once the
        password is set: an interrupted start tries again with a new one.
        """
        path = self.config.password_file(SUPERUSER)
        if read_password(path) is not None:
            return
        password = new_password()
        argv = [str(bin_dir / "postgres"), "--single", "-D", str(self.config.pgdata)]
        argv += ["-c", "password_encryption=scram-sha-256", "-c", "log_statement=none", "postgres"]
        # A single line: in single-user mode a newline ends the statement.
        sql = f"ALTER ROLE {SUPERUSER} PASSWORD '{password}';\n"
        self._run(argv, account, deadline, cwd=self.config.pgdata, stdin=sql)
        write_password(path, password)

    def _stop_leftover_postmaster(self, deadline: float) -> None:
        """Stop a server an earlier launcher left running on this cluster (killed before it could
        stop it): a fast shutdown, and SIGKILL if that does not end it by ``deadline``.

        Never adopted: a server we did not start has no parent-death signal and may run with
        other settings, so it is started afresh.
        """
        info = _read_postmaster_pid(self.config.pgdata / "postmaster.pid")
        if info is None or not _is_live_postgres(pid := info[0]):
            return  # no lock file, or a stale one that postgres replaces itself
        self._say(
            f"PostgreSQL from an earlier run (pid {pid}) is still running on "
            f"{self.config.pgdata}; stopping it to start it afresh"
        )
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        except PermissionError as exc:
            raise LauncherError(
                f"a PostgreSQL server of another user (pid {pid}) runs on {self.config.pgdata}; "
                "run meterflow up as the user who owns the data directory"
            ) from exc
        if not wait_gone(pid, max(deadline - time.monotonic(), 1.0) / 2):
            self._say(f"PostgreSQL (pid {pid}) did not shut down; killing it")
            _kill_postmaster(pid)

    def _launch(self, bin_dir: Path, account: pwd.struct_passwd | None) -> subprocess.Popen[bytes]:
        argv = [str(bin_dir / "postgres"), "-D", str(self.config.pgdata)]
        for name, value in server_settings(self.config).items():
            argv += ["-c", f"{name}={value}"]
        with self.config.log_file.open("ab") as log:
            log.write(
                f"--- meterflow launcher: starting postgres on port {self.config.port}\n".encode()
            )
            log.flush()
            self._log_offset = log.tell()
            # A session of its own: a terminal's Ctrl-C reaches us, not postgres, so shutdown stays
            # ordered (the application drains before its database goes away).
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.config.pgdata,
                env=_child_env(),
                start_new_session=True,
                # After the switch to ``account``, which would clear it: see prctl(2).
                preexec_fn=die_with_parent(signal.SIGINT),  # noqa: PLW1509 - only calls prctl
                **_credentials(account),
            )
        self._process = process
        return process

    def _wait_until_ready(
        self, process: subprocess.Popen[bytes], deadline: float, timeout_s: float
    ) -> None:
        pid_file = self.config.pgdata / "postmaster.pid"
        delay = 0.01
        while True:
            code = process.poll()
            if code is not None:
                raise LauncherError(
                    f"postgres exited with code {code} during start-up{self._tail()}"
                )
            if _read_postmaster_pid(pid_file) == (process.pid, "ready"):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LauncherError(f"postgres was not ready within {timeout_s}s{self._tail()}")
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.2)

    def _bootstrap(self, bin_dir: Path, deadline: float) -> None:
        app_password = ""
        if self.config.password_auth:
            path = self.config.password_file(self.config.user)
            app_password = read_password(path) or new_password()
        # Variables, not argv: a password on a command line is visible to every user in ps.
        sql = f"\\set app_user {_psql_literal(self.config.user)}\n"
        sql += f"\\set app_db {_psql_literal(self.config.database)}\n"
        sql += f"\\set app_password {_psql_literal(app_password)}\n{_BOOTSTRAP_SQL}"
        argv = [str(bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        argv += ["-h", HOST, "-p", str(self.config.port), "-U", SUPERUSER, "-d", "postgres"]
        self._run(argv, None, deadline, stdin=sql, password=self._password(SUPERUSER))
        if app_password:
            write_password(self.config.password_file(self.config.user), app_password)

    def _run(
        self,
        argv: list[str],
        account: pwd.struct_passwd | None,
        deadline: float,
        *,
        cwd: Path | None = None,
        stdin: str | None = None,
        password: str | None = None,
    ) -> None:
        timeout = max(deadline - time.monotonic(), 1.0)
        try:
            subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                text=True,
                check=True,
                timeout=timeout,
                cwd=cwd,
                env=_child_env(password),
                **_credentials(account),
            )
        except subprocess.CalledProcessError as exc:
            output = (exc.stdout or "") + (exc.stderr or "")
            raise LauncherError(
                f"{Path(argv[0]).name} failed ({exc.returncode}):\n{output}"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise LauncherError(f"{Path(argv[0]).name} took longer than {timeout:.0f}s") from exc

    def _tail(self, lines: int = 30) -> str:
        try:
            with self.config.log_file.open("rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode(errors="replace")
        except OSError:
            return ""
        tail = "\n".join(text.splitlines()[-lines:])
        return f"; log tail ({self.config.log_file}):\n{tail}" if tail else ""


def _dsn(user: str, password: str | None, port: int, database: str) -> str:
    credentials = quote(user, safe="")
    if password:
        credentials += f":{quote(password, safe='')}"
    return f"postgresql://{credentials}@{HOST}:{port}/{quote(database, safe='')}"


def _psql_literal(value: str) -> str:
    """``value`` as a single-quoted psql meta-command argument."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
