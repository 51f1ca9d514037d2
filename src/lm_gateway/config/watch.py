"""Reload the config when its files change.

Polling, not inotify: it works the same everywhere (containers, bind mounts, network filesystems,
editors and config tools that replace files instead of writing them), and its cost is reading a few
small files every ``watch_interval_ms`` (default 2 s) in a worker thread. The files watched are the
ones the loader reads: the config file, ``conf.d/*.toml`` next to it and the profile files
(``gateway.profile_dir``, default ``profiles/``), with files appearing and disappearing noticed too,
and the secret files the running config names (a rotated key file, e.g. a Kubernetes Secret volume
or a Docker secret, is picked up without a reload by hand). Only hashes are kept, never contents.

A change is recognised by content (a hash), not by modification time, so an edit within the same
second, or one that keeps the size, is seen, and touching a file without changing it is not a
change. A reload runs only once the files have stopped changing for a moment (an editor or a
deployment tool writing several files), and a broken result is reported once, when it appears, not
at every poll: the watcher only acts again when the files change again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from lm_gateway.config.schema import GatewayConfig

log = logging.getLogger("lm_gateway.config")

# After a change is seen, the files must keep the same content this long before a reload.
SETTLE_S = 0.25
# ... but a file that never stops changing is reloaded after this many settle rounds anyway.
MAX_SETTLE_ROUNDS = 8

Fingerprint = tuple[tuple[str, str | None], ...]


def watched_files(config_path: Path, profile_dir: str | None) -> list[Path]:
    """The files the loader would read for ``config_path`` (existing ones; the directories are
    listed again at every poll, so new files count)."""
    base = config_path.parent
    files = [config_path]
    conf_d = base / "conf.d"
    if conf_d.is_dir():
        files.extend(sorted(conf_d.glob("*.toml")))
    directory = Path(profile_dir) if profile_dir else base / "profiles"
    if not directory.is_absolute():
        directory = base / directory
    if directory.is_dir():
        files.extend(sorted(directory.glob("*.toml")))
    return files


def fingerprint(config_path: Path, profile_dir: str | None, extra: Sequence[Path] = ()) -> Fingerprint:
    """Each watched file with the hash of its content (None when it cannot be read)."""
    result: list[tuple[str, str | None]] = []
    for file in [*watched_files(config_path, profile_dir), *extra]:
        try:
            digest: str | None = hashlib.sha256(file.read_bytes()).hexdigest()
        except OSError:
            digest = None
        result.append((str(file), digest))
    return tuple(result)


class ConfigWatcher:
    """Polls the config files and calls ``reload`` when their content changed.

    ``settings`` returns the running ``[gateway]`` section, read at every poll: a reload can turn
    watching off (``watch_config = false``), change the interval or move the profile directory.
    ``reload`` returns the problems of a refused config (it reports them itself). ``secret_files``
    returns the secret files the running config names.
    """

    def __init__(
        self,
        config_path: Path,
        settings: Callable[[], GatewayConfig],
        reload: Callable[[], Awaitable[list[str]]],
        secret_files: Callable[[], list[Path]] = list,
    ) -> None:
        self.config_path = config_path
        self._settings = settings
        self._secret_files = secret_files
        self._reload = reload
        self._task: asyncio.Task[None] | None = None
        self._seen: Fingerprint | None = None
        self.reloads = 0  # reloads started by the watcher (for tests and the log)

    def start(self) -> None:
        """Take the current files as the baseline and start polling (in the running loop).

        The baseline is read here, synchronously (a few small files, once), so that an edit made
        as soon as the gateway is up is not mistaken for the starting point."""
        if self._task is None:
            self._seen = fingerprint(self.config_path, self._settings().profile_dir, self._secret_files())
            self._task = asyncio.get_running_loop().create_task(self._run(), name="lmg-config-watcher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _snapshot(self) -> Fingerprint:
        settings = self._settings()
        return await asyncio.to_thread(
            fingerprint, self.config_path, settings.profile_dir, self._secret_files()
        )

    async def _run(self) -> None:
        while True:
            settings = self._settings()
            await asyncio.sleep(settings.watch_interval_ms / 1000)
            if not self._settings().watch_config:
                continue
            try:
                await self.poll()
            except Exception:
                log.exception("config watcher: checking the config files failed")

    async def poll(self) -> bool:
        """Check once; True when the files changed (and a reload was run)."""
        current = await self._snapshot()
        if current == self._seen:
            return False
        current = await self._settled(current)
        self._seen = current
        self.reloads += 1
        log.info("config files changed; reloading %s", self.config_path)
        await self._reload()
        return True

    async def _settled(self, current: Fingerprint) -> Fingerprint:
        """Wait until the files stop changing (several files written one after the other)."""
        for _ in range(MAX_SETTLE_ROUNDS):
            await asyncio.sleep(SETTLE_S)
            again = await self._snapshot()
            if again == current:
                break
            current = again
        return current
