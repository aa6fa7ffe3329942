"""The stand-in ``mongod``'s TCP side: an asyncio server feeding a MongoStandin (server.py),
a background-thread variant for the unit tests, and ``serve`` (the container's mongod)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import sys
import threading
from pathlib import Path

from . import DEFAULT_PORT
from .crud import Session
from .server import MongoStandin, log
from .storage import Storage
from .wire import HEADER, MAX_MESSAGE_SIZE, ProtocolError, encode_reply, parse_message


class StandinServer:
    """The TCP side: one asyncio server feeding a MongoStandin."""

    def __init__(
        self, core: MongoStandin, host: str | list[str] = "127.0.0.1", port: int = DEFAULT_PORT
    ) -> None:
        self.core = core
        self.host = host
        self.port = port
        self._server: asyncio.AbstractServer | None = None
        self._conn_ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind and listen (``port=0`` picks a free port, stored in ``self.port``)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log("NETWORK", "Waiting for connections", port=self.port, host=self.host, ssl="off")

    async def close(self) -> None:
        """Stop listening and drop every open connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        session = Session(next(self._conn_ids), client)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.core.connections += 1
        try:
            while True:
                header = HEADER.unpack(await reader.readexactly(HEADER.size))
                if not HEADER.size < header[0] <= MAX_MESSAGE_SIZE:
                    raise ProtocolError(f"invalid message length {header[0]}")
                payload = await reader.readexactly(header[0] - HEADER.size)
                request = parse_message(header, payload)
                reply = self.core.handle(session, request)
                if not request.more_to_come:
                    writer.write(encode_reply(request, reply))
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except ProtocolError as exc:
            log(
                "NETWORK",
                "Closing connection on a protocol error",
                "W",
                client=client,
                error=str(exc),
            )
        finally:
            if task is not None:
                self._tasks.discard(task)
            self.core.connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class ServerThread:
    """A stand-in server on a background thread (unit tests): ``with ServerThread() as s:``."""

    def __init__(
        self, dbpath: Path | str | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.storage = Storage(dbpath)
        self.core = MongoStandin(self.storage)
        self.server = StandinServer(self.core, host, port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="mongo-standin", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def uri(self) -> str:
        return f"mongodb://{self.server.host}:{self.server.port}/"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.server.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.server.close())
        self._loop.close()

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"the stand-in server did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def serve(dbpath: Path, host: str | list[str], port: int) -> None:
    """Run until SIGTERM/SIGINT (the container's PID 1 must handle them itself)."""
    storage = Storage(dbpath)
    server = StandinServer(MongoStandin(storage), host, port)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log("CONTROL", "Shutting down (every acknowledged write is already on disk)")
    await server.close()
    log("CONTROL", "Now exiting", exitCode=0)
    sys.stdout.flush()
