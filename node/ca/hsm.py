"""PKCS#11 keys behind the ``Signer`` interface (python-pkcs11).

One settings table says where a token is: the PKCS#11 module (SoftHSM2 on a
developer machine, the AWS CloudHSM library in production: same code, another
path), the token label, and where the PIN comes from (a file or an environment
variable, never the command line, never a log line).

Threading.  python-pkcs11 with SoftHSM2 crashes when two threads use sessions at
once, so every PKCS#11 call of the process is made by ONE worker thread
(``Pkcs11Worker``; DESIGN.md section 6).  No pkcs11 object (library, token,
session, key handle) ever leaves that thread: a job is a closure run on the
worker that returns plain bytes or a ``cryptography`` public key.  trio tasks wait
for their job without blocking the event loop, each with a timeout, so a hung HSM
surfaces as ``HsmTimeoutError`` instead of a frozen node.

Failure handling, each with a message that says what to do:

- the module cannot be loaded, the token or key label does not exist, the PIN is
  wrong or locked: ``HsmError`` subclasses, raised at once;
- the session disappears mid-run (HSM failover, a restarted HSM client, a
  ``C_CloseAllSessions``): the session is reopened, the user logs in again and
  the call is retried once; a second loss raises ``HsmSessionLostError``;
- a call does not return within the settings' timeout: ``HsmTimeoutError``.  The
  stuck call cannot be interrupted (PKCS#11 has no cancellation), so calls queued
  behind it wait too, each failing at its own deadline, until the HSM answers.

SoftHSM2 reads ``SOFTHSM2_CONF`` when the module is initialised, so one process
sees one token directory at a time.  Settings carry the environment their
module needs; when a job needs another environment for the same module (the
ceremony works on the root token, then on each validator's), the worker
finalises and re-initialises the module, and every open session of it is
forgotten and reopened on next use.
"""

from __future__ import annotations

import collections
import concurrent.futures
import ctypes
import functools
import hashlib
import itertools
import os
import queue
import secrets
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pkcs11
import trio
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11e

from trustchain.ct.signer import PublicKey
from trustchain.node.ca.schemes import SignatureScheme, check_scheme, default_scheme
from trustchain.node.config import ConfigError, Key, check_table
from trustchain.node.errors import UserError
from trustchain.node.log import get_logger

T = TypeVar("T")

SOFTHSM2_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
"""Where Debian's softhsm2 package installs the module."""

DEFAULT_TIMEOUT = 10.0
"""Seconds a PKCS#11 call may take before the HSM counts as hung."""

_log = get_logger("hsm")


# --- errors ----------------------------------------------------------------------


class HsmError(UserError):
    """The HSM refused or failed an operation; the message says what to do."""


class HsmModuleError(HsmError):
    """The PKCS#11 module cannot be loaded."""


class HsmTokenNotFoundError(HsmError):
    """No token carries the configured label."""


class HsmKeyNotFoundError(HsmError):
    """The token has no key with the configured label."""


class HsmPinError(HsmError):
    """The PIN is missing, unreadable, wrong, or the token is locked."""


class HsmKeyUnsafeError(HsmError):
    """A key that was not generated in the token, or that can be extracted."""


class HsmSessionLostError(HsmError):
    """The session was lost twice in a row: once is retried, twice is not."""


class HsmTimeoutError(HsmError):
    """The HSM did not answer within the timeout."""


# Errors that mean "this session (or its login) is gone"; everything else about
# the call itself is reported as is.
_SESSION_LOST: tuple[type[Exception], ...] = (
    p11e.SessionHandleInvalid,
    p11e.SessionClosed,
    p11e.DeviceRemoved,
    p11e.TokenNotPresent,
    p11e.UserNotLoggedIn,
    p11e.KeyHandleInvalid,
    p11e.ObjectHandleInvalid,
)


# --- settings --------------------------------------------------------------------


@dataclass(frozen=True)
class Pkcs11Settings:
    """Where one token is and how to log in to it."""

    module: Path
    """The PKCS#11 library (SoftHSM2, CloudHSM's libcloudhsm_pkcs11.so, ...)."""
    token_label: str
    """CKA token label, at most 32 bytes of UTF-8."""
    pin_file: Path | None = None
    """A file (mode 0600) holding the user PIN; exactly one of pin_file / pin_env."""
    pin_env: str | None = None
    """An environment variable holding the user PIN."""
    env: tuple[tuple[str, str], ...] = ()
    """Environment the module reads when initialised (SoftHSM2: SOFTHSM2_CONF)."""
    timeout: float = DEFAULT_TIMEOUT
    """Seconds a call may take before the HSM counts as hung."""
    source: str = "PKCS#11 settings"
    """Where these settings came from, for error messages."""

    def __post_init__(self) -> None:
        if (self.pin_file is None) == (self.pin_env is None):
            raise ConfigError(f"{self.source}: set exactly one of pin_file and pin_env")
        if not 1 <= len(self.token_label.encode()) <= 32:
            raise ConfigError(f"{self.source}: token_label must be 1 to 32 bytes")
        if not self.timeout > 0:
            raise ConfigError(f"{self.source}: timeout must be positive")

    @property
    def pin_source(self) -> str:
        """Where the PIN is read from, for messages (never the PIN itself)."""
        if self.pin_file is not None:
            return f"PIN file {self.pin_file}"
        return f"environment variable {self.pin_env}"

    def read_pin(self) -> str:
        """The user PIN; HsmPinError naming the file or variable if it is unusable."""
        if self.pin_env is not None:
            pin = os.environ.get(self.pin_env)
            if not pin:
                raise HsmPinError(
                    f"environment variable {self.pin_env} is not set or empty; export it "
                    f"with the user PIN of token {self.token_label!r}"
                )
            return pin
        assert self.pin_file is not None
        try:
            mode = self.pin_file.stat().st_mode
            text = self.pin_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise HsmPinError(
                f"cannot read PIN file {self.pin_file}: {exc.strerror}; "
                f"it must hold the user PIN of token {self.token_label!r}"
            ) from None
        except UnicodeDecodeError:
            raise HsmPinError(f"PIN file {self.pin_file} is not UTF-8 text") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise HsmPinError(
                f"PIN file {self.pin_file} is readable by other users; run "
                f"`chmod 600 {self.pin_file}`"
            )
        pin = text.rstrip("\r\n")
        if not pin:
            raise HsmPinError(f"PIN file {self.pin_file} is empty")
        return pin


def softhsm_settings(
    token_dir_conf: Path, token_label: str, pin_file: Path, *, timeout: float = DEFAULT_TIMEOUT
) -> Pkcs11Settings:
    """Settings for a SoftHSM2 token whose configuration file is ``token_dir_conf``."""
    return Pkcs11Settings(
        module=SOFTHSM2_MODULE,
        token_label=token_label,
        pin_file=pin_file,
        env=(("SOFTHSM2_CONF", str(token_dir_conf)),),
        timeout=timeout,
    )


_CONF_MARKER = "# SoftHSM2 configuration written by trustchain"


def write_softhsm_conf(conf: Path, token_dir: Path) -> None:
    """A SoftHSM2 configuration keeping tokens in ``token_dir`` (file backend)."""
    token_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = conf.with_suffix(".tmp")
    tmp.write_text(
        f"{_CONF_MARKER} (docs/ca.md); the token directory\n"
        "# is kept next to this file: trustchain rewrites the path if the folder moves.\n"
        f"directories.tokendir = {token_dir.resolve()}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
    )
    tmp.replace(conf)


def follow_moved_tokens(conf: Path) -> None:
    """Point a trustchain-written SoftHSM2 config at the ``tokens`` folder beside it.

    SoftHSM2 wants an absolute token directory, so copying a validator's folder
    (token included) into a node's data directory would leave the copy using the
    original tokens.  Configs we wrote carry a marker; for those, a stale path is
    corrected.  Other configs are left alone.
    """
    try:
        text = conf.read_text()
    except OSError:
        return
    if not text.startswith(_CONF_MARKER):
        return
    beside = (conf.parent / "tokens").resolve()
    wanted = f"directories.tokendir = {beside}"
    if wanted in text.splitlines() or not beside.is_dir():
        return
    write_softhsm_conf(conf, beside)
    _log.info("hsm.softhsm_conf_moved", conf=str(conf), tokendir=str(beside))


def _positive_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"expected a positive number of seconds, got {value!r}")
    return float(value)


def _nonempty(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _env_table(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError("expected a table of string values")
    return dict(value)


_PKCS11_KEYS = {
    "module": Key(_nonempty, required=True),
    "token_label": Key(_nonempty, required=True),
    "pin_file": Key(_nonempty),
    "pin_env": Key(_nonempty),
    "softhsm2_conf": Key(_nonempty),
    "timeout": Key(_positive_number, default=DEFAULT_TIMEOUT),
    "env": Key(_env_table, default={}),
}


def parse_pkcs11_table(source: str, table: Mapping[str, Any], base: Path) -> Pkcs11Settings:
    """Read a ``[pkcs11]`` table; relative paths are relative to ``base``.

    ``softhsm2_conf`` is a convenience for ``env.SOFTHSM2_CONF`` that may be relative.
    The table never holds the PIN itself: only ``pin_file`` or ``pin_env``.
    """
    if "pin" in table:
        raise ConfigError(
            f"{source}: key 'pkcs11.pin': PINs are never stored in settings; "
            "use pin_file (a 0600 file) or pin_env (an environment variable)"
        )
    v = check_table(source, table, _PKCS11_KEYS, "pkcs11")
    env = dict(v["env"])
    if v["softhsm2_conf"] is not None:
        conf = (base / v["softhsm2_conf"]).resolve()
        follow_moved_tokens(conf)
        env["SOFTHSM2_CONF"] = str(conf)
    pin_file = (base / v["pin_file"]).resolve() if v["pin_file"] is not None else None
    return Pkcs11Settings(
        module=(base / v["module"]).resolve(),
        token_label=v["token_label"],
        pin_file=pin_file,
        pin_env=v["pin_env"],
        env=tuple(sorted(env.items())),
        timeout=v["timeout"],
        source=source,
    )


def write_pin_file(path: Path, pin: str) -> None:
    """Create ``path`` (mode 0600) holding ``pin``; refuse to overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(pin + "\n")
        f.flush()
        os.fsync(f.fileno())


def new_pin() -> str:
    """A random PIN (32 URL-safe characters; SoftHSM accepts 4 to 255)."""
    return secrets.token_urlsafe(24)


# --- the worker thread -----------------------------------------------------------


def _module_key(s: Pkcs11Settings) -> str:
    # One loaded module per file: two paths to one library (a symlink) must not
    # load and initialise it twice (C_Initialize would fail the second time).
    return _realpath(str(s.module))


@functools.lru_cache(maxsize=64)
def _realpath(path: str) -> str:
    # Asked at every signature: resolving the path each time costs a few stat calls.
    return os.path.realpath(path)


class _TokenSession:
    """One logged-in session to one token, owned by the worker thread."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.private_keys: dict[str, Any] = {}


class _WorkerState:
    """Everything PKCS#11 the process holds.  Owned by the worker thread alone."""

    def __init__(self) -> None:
        # module path -> (pkcs11.lib, the env it was initialised with)
        self.libs: dict[str, tuple[Any, tuple[tuple[str, str], ...]]] = {}
        # (module path, token label) -> session
        self.tokens: dict[tuple[str, str], _TokenSession] = {}

    # -- modules

    def lib(self, s: Pkcs11Settings) -> Any:
        path = _module_key(s)
        loaded = self.libs.get(path)
        if loaded is not None and loaded[1] == s.env:
            return loaded[0]
        if loaded is not None:
            # Another environment (another SoftHSM token directory): finalise,
            # which closes every session of this module, and start again.
            self.tokens = {k: v for k, v in self.tokens.items() if k[0] != path}
            loaded[0].finalize()
            del self.libs[path]
        for name, value in s.env:
            os.environ[name] = value
        if not s.module.exists():
            raise HsmModuleError(
                f"PKCS#11 module {s.module} does not exist ({s.source}); install it "
                "(Debian: `apt-get install softhsm2`) or fix 'module'"
            )
        try:
            lib = pkcs11.lib(path)
            if not lib.initialized:
                lib.initialize()
        except p11e.PKCS11Error as exc:
            raise HsmModuleError(
                f"cannot load PKCS#11 module {s.module} ({s.source}): {exc or type(exc).__name__}"
            ) from None
        self.libs[path] = (lib, s.env)
        return lib

    def functions(self, s: Pkcs11Settings) -> Any:
        """The raw CK_FUNCTION_LIST, for the calls python-pkcs11 does not wrap."""
        self.lib(s)
        dll = ctypes.CDLL(_module_key(s))
        pointer = ctypes.POINTER(_FunctionList)()
        rv = dll.C_GetFunctionList(ctypes.byref(pointer))
        if rv != 0:
            raise HsmModuleError(f"{s.module}: C_GetFunctionList failed (CKR 0x{rv:x})")
        return pointer.contents

    # -- tokens and sessions

    def token(self, s: Pkcs11Settings) -> Any:
        lib = self.lib(s)
        try:
            return lib.get_token(token_label=s.token_label)
        except p11e.NoSuchToken:
            labels = sorted(t.label for t in lib.get_tokens() if t.label)
            present = ", ".join(repr(x) for x in labels) or "none"
            where = dict(s.env).get("SOFTHSM2_CONF")
            hint = f" (SOFTHSM2_CONF={where})" if where else ""
            raise HsmTokenNotFoundError(
                f"no token labelled {s.token_label!r} in {s.module}{hint}; tokens present: "
                f"{present}.  Create it (`trustchain ca init` or your HSM's tools) or fix "
                f"token_label in {s.source}"
            ) from None
        except p11e.MultipleTokensReturned:
            raise HsmTokenNotFoundError(
                f"more than one token is labelled {s.token_label!r} in {s.module}; "
                "token labels must be unique"
            ) from None

    def session(self, s: Pkcs11Settings) -> _TokenSession:
        key = (_module_key(s), s.token_label)
        existing = self.tokens.get(key)
        if existing is not None:
            return existing
        token = self.token(s)
        pin = s.read_pin()
        try:
            session = token.open(rw=True, user_pin=pin)
        except (p11e.PinIncorrect, p11e.PinLenRange, p11e.PinInvalid):
            raise HsmPinError(
                f"token {s.token_label!r} refused the PIN from {s.pin_source}; put the "
                "right user PIN there (each wrong attempt counts towards locking the token)"
            ) from None
        except p11e.PinLocked:
            raise HsmPinError(
                f"token {s.token_label!r} is locked after too many wrong PINs; the security "
                "officer must unlock it (SoftHSM: softhsm2-util --init-pin)"
            ) from None
        except p11e.PinExpired:
            raise HsmPinError(f"the user PIN of token {s.token_label!r} has expired") from None
        except p11e.UserAlreadyLoggedIn:
            # The login of an earlier session survived (PKCS#11 logins are per
            # application and token): a session without a new login is enough.
            session = token.open(rw=True)
        opened = _TokenSession(session)
        self.tokens[key] = opened
        return opened

    def forget(self, s: Pkcs11Settings) -> None:
        """Drop the session (already dead, or about to be): never reuse its handles."""
        ts = self.tokens.pop((_module_key(s), s.token_label), None)
        if ts is not None:
            try:
                ts.session.close()
            except p11e.PKCS11Error:
                pass

    def private_key(self, s: Pkcs11Settings, label: str) -> Any:
        ts = self.session(s)
        key = ts.private_keys.get(label)
        if key is None:
            key = self.find_private_key(ts, s, label)
            ts.private_keys[label] = key
        return key

    @staticmethod
    def find_private_key(ts: _TokenSession, s: Pkcs11Settings, label: str) -> Any:
        try:
            key = ts.session.get_key(ObjectClass.PRIVATE_KEY, label=label)
        except p11e.NoSuchKey:
            labels = sorted(
                str(k.label)
                for k in ts.session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})
            )
            present = ", ".join(repr(x) for x in labels) or "none"
            raise HsmKeyNotFoundError(
                f"token {s.token_label!r} has no private key labelled {label!r} (private keys "
                f"present: {present}); generate it with `trustchain ca keygen` or fix the label"
            ) from None
        except p11e.MultipleObjectsReturned:
            raise HsmKeyNotFoundError(
                f"token {s.token_label!r} holds several private keys labelled {label!r}; "
                "labels must be unique"
            ) from None
        return key

    def with_session(self, s: Pkcs11Settings, what: str, op: Callable[[], T]) -> T:
        """Run ``op``; if the session was lost, log in again and retry once."""
        for attempt in itertools.count():
            try:
                return op()
            except _SESSION_LOST as exc:
                self.forget(s)
                reason = type(exc).__name__
                if attempt >= 1:
                    raise HsmSessionLostError(
                        f"lost the session to token {s.token_label!r} twice while trying to "
                        f"{what} ({reason}); check the HSM and its connection, then retry"
                    ) from None
                _log.warning(
                    "hsm.session_lost",
                    token=s.token_label,
                    error=reason,
                    action="log in again and retry once",
                )
        raise AssertionError("unreachable")


class _FunctionList(ctypes.Structure):
    """The first entries of CK_FUNCTION_LIST (PKCS#11 v2.40 section 5.16).

    Only the calls python-pkcs11 does not offer are used: C_InitToken (index 9)
    and C_CloseAllSessions (index 14).
    """

    _fields_ = [("version", ctypes.c_ubyte * 2)] + [(f"f{i}", ctypes.c_void_p) for i in range(15)]


_CK_RV = ctypes.c_ulong
_C_InitToken = ctypes.CFUNCTYPE(
    _CK_RV, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p
)
_C_CloseAllSessions = ctypes.CFUNCTYPE(_CK_RV, ctypes.c_ulong)


class _Job:
    def __init__(self, fn: Callable[[_WorkerState], Any], what: str) -> None:
        self.fn = fn
        self.what = what
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()


class Pkcs11Worker:
    """The one thread that makes every PKCS#11 call of this process.

    ``await worker.run(fn, what=..., timeout=...)`` queues ``fn`` and waits for it
    without blocking trio.  Jobs run one at a time in submission order.  ``fn``
    receives the worker's private state and must return plain data: no pkcs11
    object may leave the worker thread.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._state = _WorkerState()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()
        self._busy: tuple[str, float] | None = None
        self.calls_by_thread: collections.Counter[int] = collections.Counter()
        """Thread id -> jobs it ran.  Exactly one thread ever appears here."""

    def _ensure_thread(self) -> None:
        with self._start:
            if self._thread is None:
                # A daemon: a call stuck in a hung HSM must not keep the process alive.
                self._thread = threading.Thread(target=self._loop, name="pkcs11", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        me = threading.get_ident()
        while True:
            job = self._jobs.get()
            if not job.future.set_running_or_notify_cancel():
                continue  # its caller gave up before it started
            self._busy = (job.what, time.monotonic())
            self.calls_by_thread[me] += 1
            try:
                result = job.fn(self._state)
            except p11e.PKCS11Error as exc:
                # Anything not translated closer to its cause still reaches the
                # user as an HsmError naming the operation, not a traceback.
                detail = f"{type(exc).__name__} {exc}".strip()
                job.future.set_exception(
                    HsmError(f"the HSM failed to {job.what}: {detail}; check the HSM and retry")
                )
            except BaseException as exc:
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
            finally:
                self._busy = None

    def submit(self, fn: Callable[[_WorkerState], T], what: str) -> concurrent.futures.Future[T]:
        self._ensure_thread()
        job = _Job(fn, what)
        self._jobs.put(job)
        return job.future

    async def run(self, fn: Callable[[_WorkerState], T], *, what: str, timeout: float) -> T:
        """Run ``fn`` on the worker; HsmTimeoutError after ``timeout`` seconds."""
        future = self.submit(fn, what)
        trio_token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        def wake(_: object) -> None:
            try:
                trio_token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass

        future.add_done_callback(wake)
        try:
            with trio.move_on_after(timeout):
                await done.wait()
        finally:
            # Cancelled or timed out: a job that has not started never will; one
            # that is running finishes on the worker and its result is dropped.
            finished = future.done()
            if not finished:
                future.cancel()
        if not finished:
            raise self._timeout_error(what, timeout)
        return future.result()

    def _timeout_error(self, what: str, timeout: float) -> HsmTimeoutError:
        busy = self._busy
        detail = ""
        if busy is not None:
            detail = (
                f"; the HSM has been busy with {busy[0]!r} for {time.monotonic() - busy[1]:.1f} s"
            )
        return HsmTimeoutError(
            f"the HSM did not {what} within {timeout:g} s{detail}.  Check the HSM (is it "
            "up, reachable, not overloaded?); calls resume when it answers"
        )


_WORKER: Pkcs11Worker | None = None
_WORKER_LOCK = threading.Lock()


def worker() -> Pkcs11Worker:
    """The process's PKCS#11 worker (created on first use)."""
    global _WORKER
    with _WORKER_LOCK:
        if _WORKER is None:
            _WORKER = Pkcs11Worker()
        return _WORKER


# --- jobs ------------------------------------------------------------------------

_DIGEST_INFO_PREFIX = {
    # RFC 8017 section 9.2 note 1: DER DigestInfo prefixes for EMSA-PKCS1-v1_5.
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
}


def _sign_on_worker(
    state: _WorkerState, s: Pkcs11Settings, label: str, scheme: SignatureScheme, message: bytes
) -> bytes:
    algorithm = scheme.hash
    if algorithm is None:
        raise HsmError("Ed25519 keys are not supported in the HSM signer")
    digest = hashlib.new(algorithm.name, message).digest()

    def op() -> bytes:
        key = state.private_key(s, label)
        if scheme in (SignatureScheme.ECDSA_SHA256, SignatureScheme.ECDSA_SHA384):
            # CKM_ECDSA signs a digest and returns r || s (PKCS#11 v2.40 section
            # 2.3.1); X.509 and RFC 6962 want the DER Ecdsa-Sig-Value.
            raw = bytes(key.sign(digest, mechanism=Mechanism.ECDSA))
            half = len(raw) // 2
            return encode_dss_signature(
                int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
            )
        if scheme is SignatureScheme.RSA_PSS_SHA384:
            param = (Mechanism.SHA384, pkcs11.MGF.SHA384, 48)
            return bytes(key.sign(digest, mechanism=Mechanism.RSA_PKCS_PSS, mechanism_param=param))
        info = _DIGEST_INFO_PREFIX[algorithm.name] + digest
        return bytes(key.sign(info, mechanism=Mechanism.RSA_PKCS))

    try:
        return state.with_session(s, f"sign with key {label!r}", op)
    except p11e.PKCS11Error as exc:
        raise HsmError(
            f"token {s.token_label!r} failed to sign with key {label!r}: "
            f"{type(exc).__name__} {exc}".rstrip()
        ) from None


def _public_key_on_worker(state: _WorkerState, s: Pkcs11Settings, label: str) -> PublicKey:
    def op() -> PublicKey:
        ts = state.session(s)
        private = state.private_key(s, label)
        _check_key_safety(private, s, label)
        try:
            public = ts.session.get_key(ObjectClass.PUBLIC_KEY, label=label)
        except p11e.NoSuchKey:
            raise HsmKeyNotFoundError(
                f"token {s.token_label!r} has a private key {label!r} but no public key "
                "with that label; the CA needs both (generate keys with `trustchain ca keygen`)"
            ) from None
        return _public_from_object(public, s, label)

    return state.with_session(s, f"read the public key {label!r}", op)


def _check_key_safety(private: Any, s: Pkcs11Settings, label: str) -> None:
    attrs = private.get_attributes(
        [
            Attribute.SENSITIVE,
            Attribute.EXTRACTABLE,
            Attribute.ALWAYS_SENSITIVE,
            Attribute.NEVER_EXTRACTABLE,
            Attribute.SIGN,
        ]
    )
    problems = []
    if not attrs.get(Attribute.SENSITIVE) or not attrs.get(Attribute.ALWAYS_SENSITIVE):
        problems.append("is not (always) sensitive")
    if attrs.get(Attribute.EXTRACTABLE) or not attrs.get(Attribute.NEVER_EXTRACTABLE):
        problems.append("is or was extractable")
    if not attrs.get(Attribute.SIGN):
        problems.append("cannot sign")
    if problems:
        raise HsmKeyUnsafeError(
            f"key {label!r} in token {s.token_label!r} {' and '.join(problems)}: CA keys "
            "must be generated inside the token, sensitive and never extractable.  "
            "Generate a new one with `trustchain ca keygen`"
        )


def _public_from_object(public: Any, s: Pkcs11Settings, label: str) -> PublicKey:
    key_type = public.key_type
    if key_type == KeyType.EC:
        params = bytes(public[Attribute.EC_PARAMS])
        curve = _CURVES_BY_PARAMS.get(params)
        if curve is None:
            raise HsmError(f"key {label!r} in token {s.token_label!r} is on an unsupported curve")
        point = bytes(public[Attribute.EC_POINT])
        # CKA_EC_POINT is the DER OCTET STRING holding the point (PKCS#11 v2.40
        # section 2.3.3); some modules return the bare point.
        if point[:1] == b"\x04" and len(point) > 2 and point[1] == len(point) - 2:
            point = point[2:]
        elif point[:2] == b"\x04\x81" and point[2] == len(point) - 3:
            point = point[3:]
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    if key_type == KeyType.RSA:
        n = int.from_bytes(bytes(public[Attribute.MODULUS]), "big")
        e = int.from_bytes(bytes(public[Attribute.PUBLIC_EXPONENT]), "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    raise HsmError(f"key {label!r} in token {s.token_label!r} is neither EC nor RSA")


_CURVE_PARAMS = {
    # DER OIDs (RFC 5480 section 2.1.1.1) as CKA_EC_PARAMS holds them.
    "p256": (bytes.fromhex("06082a8648ce3d030107"), ec.SECP256R1()),
    "p384": (bytes.fromhex("06052b81040022"), ec.SECP384R1()),
}
_CURVES_BY_PARAMS: dict[bytes, ec.EllipticCurve] = {p: c for p, c in _CURVE_PARAMS.values()}

KEY_KINDS = ("p256", "p384", "rsa3072", "rsa4096")
"""Key types ``generate_key`` makes: P-256 (CT log), P-384 (intermediate), RSA (root)."""


def _generate_on_worker(state: _WorkerState, s: Pkcs11Settings, label: str, kind: str) -> PublicKey:
    ts = state.session(s)
    existing = list(ts.session.get_objects({Attribute.LABEL: label}))
    if existing:
        raise HsmError(
            f"token {s.token_label!r} already holds an object labelled {label!r}; "
            "choose a new label (keys are never overwritten)"
        )
    key_id = secrets.token_bytes(16)
    # PKCS#11 v2.40 section 4.9: generated in the token, never extractable, always
    # sensitive; the public half is a token object too, so the CA can read it back.
    private_template = {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
        Attribute.DECRYPT: False,
        Attribute.UNWRAP: False,
        Attribute.DERIVE: False,
    }
    public_template: dict[Attribute, Any] = {
        Attribute.TOKEN: True,
        Attribute.VERIFY: True,
        Attribute.ENCRYPT: False,
    }
    if kind in _CURVE_PARAMS:
        params = ts.session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: _CURVE_PARAMS[kind][0]}, local=True
        )
        public, _ = params.generate_keypair(
            store=True,
            label=label,
            id=key_id,
            public_template=public_template,
            private_template=private_template,
        )
    elif kind in ("rsa3072", "rsa4096"):
        public_template[Attribute.PUBLIC_EXPONENT] = b"\x01\x00\x01"
        public, _ = ts.session.generate_keypair(
            KeyType.RSA,
            int(kind[3:]),
            store=True,
            label=label,
            id=key_id,
            public_template=public_template,
            private_template=private_template,
        )
    else:
        raise HsmError(f"unknown key kind {kind!r} (choose one of {', '.join(KEY_KINDS)})")
    _log.info("hsm.key_generated", token=s.token_label, label=label, kind=kind)
    return _public_from_object(public, s, label)


# --- public API ------------------------------------------------------------------


class Pkcs11Signer:
    """A ``Signer`` (and ``CASigner``) whose private key stays in a PKCS#11 token.

    Create it with ``await Pkcs11Signer.open(settings, label)``, which checks that
    the token, the PIN and the key are usable and reads the public key once.
    ``sign`` is safe to call from many trio tasks at once: the calls queue on the
    process's one PKCS#11 worker thread.
    """

    def __init__(
        self,
        settings: Pkcs11Settings,
        label: str,
        public: PublicKey,
        scheme: SignatureScheme,
        pool: Pkcs11Worker,
    ) -> None:
        self.settings = settings
        self.label = label
        self._public = public
        self._scheme = scheme
        self._worker = pool

    @classmethod
    async def open(
        cls,
        settings: Pkcs11Settings,
        label: str,
        *,
        scheme: SignatureScheme | None = None,
    ) -> Pkcs11Signer:
        """Log in, find ``label`` and check it is a safe signing key.

        ``scheme`` is needed only for RSA keys (PKCS #1 v1.5 or PSS); by default
        RSA keys sign with RSASSA-PKCS1-v1_5 and SHA-384 here (the root CA).
        """
        pool = worker()
        public = await pool.run(
            lambda state: _public_key_on_worker(state, settings, label),
            what=f"open key {label!r} on token {settings.token_label!r}",
            timeout=settings.timeout,
        )
        if scheme is None:
            if isinstance(public, rsa.RSAPublicKey):
                scheme = SignatureScheme.RSA_PKCS1_SHA384
            else:
                scheme = default_scheme(public)
        try:
            check_scheme(public, scheme)
        except ValueError as exc:
            raise HsmError(f"key {label!r} in token {settings.token_label!r}: {exc}") from None
        return cls(settings, label, public, scheme, pool)

    @property
    def scheme(self) -> SignatureScheme:
        return self._scheme

    def public_key(self) -> PublicKey:
        return self._public

    async def sign(self, message: bytes) -> bytes:
        s, label, scheme = self.settings, self.label, self._scheme
        return await self._worker.run(
            lambda state: _sign_on_worker(state, s, label, scheme, message),
            what=f"sign with key {label!r} on token {s.token_label!r}",
            timeout=s.timeout,
        )

    async def sign_many(self, messages: Sequence[bytes]) -> list[bytes]:
        """Sign each message, all in one job on the worker thread."""
        s, label, scheme = self.settings, self.label, self._scheme
        batch = list(messages)
        return await self._worker.run(
            lambda state: [_sign_on_worker(state, s, label, scheme, m) for m in batch],
            what=f"sign {len(batch)} messages with key {label!r} on token {s.token_label!r}",
            timeout=s.timeout,
        )

    def __repr__(self) -> str:
        return f"Pkcs11Signer(token={self.settings.token_label!r}, label={self.label!r})"


async def generate_key(settings: Pkcs11Settings, label: str, kind: str) -> PublicKey:
    """Generate a key pair inside the token; returns the public key.

    RSA-4096 generation can take a minute on SoftHSM, so the timeout is at least
    ten minutes here.
    """
    if kind not in KEY_KINDS:
        raise HsmError(f"unknown key kind {kind!r} (choose one of {', '.join(KEY_KINDS)})")
    pool = worker()
    return await pool.run(
        lambda state: state.with_session(
            settings,
            f"generate key {label!r}",
            lambda: _generate_on_worker(state, settings, label, kind),
        ),
        what=f"generate a {kind} key {label!r} on token {settings.token_label!r}",
        timeout=max(settings.timeout, 600.0),
    )


async def list_keys(settings: Pkcs11Settings) -> list[str]:
    """Labels of the private keys in the token, sorted."""

    def job(state: _WorkerState) -> list[str]:
        def op() -> list[str]:
            ts = state.session(settings)
            objects = ts.session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})
            return sorted(str(o.label) for o in objects)

        return state.with_session(settings, "list keys", op)

    pool = worker()
    return await pool.run(job, what="list keys", timeout=settings.timeout)


async def init_softhsm_token(settings: Pkcs11Settings, so_pin: str) -> None:
    """Initialise a fresh SoftHSM2 token with ``settings.token_label`` and set its user PIN.

    For local ceremonies only: a production HSM's tokens (CloudHSM: the cluster's
    crypto users) are created with the vendor's tools, then used through settings.
    """

    def job(state: _WorkerState) -> None:
        lib = state.lib(settings)
        if any(t.label == settings.token_label for t in lib.get_tokens()):
            raise HsmError(f"a token labelled {settings.token_label!r} already exists")
        free = [
            slot
            for slot in lib.get_slots(token_present=True)
            if not slot.get_token().flags & pkcs11.TokenFlag.TOKEN_INITIALIZED
        ]
        if not free:
            raise HsmError(f"{settings.module} has no free slot for a new token")
        label = settings.token_label.encode().ljust(32, b" ")
        so = so_pin.encode()
        init_token = _C_InitToken(state.functions(settings).f9)
        rv = init_token(free[0].slot_id, so, len(so), label)
        if rv != 0:
            raise HsmError(f"C_InitToken failed for {settings.token_label!r} (CKR 0x{rv:x})")
        token = state.token(settings)
        with token.open(rw=True, so_pin=so_pin) as session:
            session.init_pin(settings.read_pin())
        _log.info("hsm.token_initialised", token=settings.token_label)

    pool = worker()
    await pool.run(job, what=f"initialise token {settings.token_label!r}", timeout=120.0)


async def close_all_sessions(settings: Pkcs11Settings) -> None:
    """``C_CloseAllSessions`` on the token's slot: every session and login ends.

    This is what an HSM failover does to its clients; signers notice on their
    next call, log in again and carry on.
    """

    def job(state: _WorkerState) -> None:
        slot_id = state.token(settings).slot.slot_id
        rv = _C_CloseAllSessions(state.functions(settings).f14)(slot_id)
        if rv != 0:
            raise HsmError(f"C_CloseAllSessions failed (CKR 0x{rv:x})")

    pool = worker()
    await pool.run(job, what="close all sessions", timeout=settings.timeout)
