"""A WebHDFS server for tests: it stands in for an HDFS cluster, which cannot be installed here.

Implemented from the WebHDFS REST documentation: a NameNode endpoint that
answers CREATE, OPEN and GETFILECHECKSUM with a 307 redirect to a DataNode
endpoint, plus GETFILESTATUS, LISTSTATUS, MKDIRS, RENAME and DELETE, errors as
`{"RemoteException": {...}}`, and HDFS's own file checksum algorithm
(MD5 of per-block MD5s of per-512-byte CRC32s). Files live in a local folder.
`fail_next(n)` makes the next n NameNode requests answer 503 (RetriableException).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlparse

PREFIX = "/webhdfs/v1"
BYTES_PER_CRC = 512
BLOCK_SIZE = 128 * 1024 * 1024


def hdfs_checksum(path: Path) -> dict[str, object]:
    """MD5-of-xMD5-of-512CRC32: what GETFILECHECKSUM returns for a file written with CRC32."""
    block_digests = []
    crcs_per_block = BLOCK_SIZE // BYTES_PER_CRC
    with path.open("rb") as handle:
        while True:
            block = handle.read(BLOCK_SIZE)
            if not block and block_digests:
                break
            crcs = b"".join(struct.pack(">I", zlib.crc32(block[i:i + BYTES_PER_CRC]) & 0xFFFFFFFF)
                            for i in range(0, len(block), BYTES_PER_CRC))
            block_digests.append(hashlib.md5(crcs).digest())
            if len(block) < BLOCK_SIZE:
                break
    md5 = hashlib.md5(b"".join(block_digests)).digest()
    payload = struct.pack(">iq", BYTES_PER_CRC, crcs_per_block) + md5
    return {"algorithm": f"MD5-of-{crcs_per_block}MD5-of-{BYTES_PER_CRC}CRC32", "bytes": payload.hex(),
            "length": len(payload)}


class WebHdfs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.failures_left = 0
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self.namenode = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(namenode=True))
        self.datanode = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(namenode=False))
        self._threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (self.namenode, self.datanode)]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.namenode.server_address[1]}"

    def start(self) -> WebHdfs:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        for server in (self.namenode, self.datanode):
            server.shutdown()
            server.server_close()

    def fail_next(self, count: int) -> None:
        with self._lock:
            self.failures_left = count

    def local(self, hdfs_path: str) -> Path:
        parts = [p for p in unquote(hdfs_path).split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ValueError(hdfs_path)
        return self.root.joinpath(*parts)

    def status(self, path: Path, suffix: str) -> dict[str, object]:
        stat = path.stat()
        return {
            "accessTime": int(stat.st_atime * 1000), "blockSize": BLOCK_SIZE, "childrenNum":
            len(list(path.iterdir())) if path.is_dir() else 0, "fileId": stat.st_ino, "group": "supergroup",
            "length": 0 if path.is_dir() else stat.st_size, "modificationTime": int(stat.st_mtime * 1000),
            "owner": "hdfs", "pathSuffix": suffix, "permission": "755" if path.is_dir() else "644",
            "replication": 0 if path.is_dir() else 3, "storagePolicy": 0,
            "type": "DIRECTORY" if path.is_dir() else "FILE",
        }

    def _handler(self, namenode: bool) -> type[BaseHTTPRequestHandler]:
        fs = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, code: int, payload: object | None = None, headers: dict[str, str] | None = None,
                       body: bytes | None = None) -> None:
                data = body if body is not None else (json.dumps(payload).encode() if payload is not None else b"")
                self.send_response(code)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/octet-stream" if body is not None else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, code: int, exception: str, message: str) -> None:
                package, _, simple = exception.rpartition(".")
                self._reply(code, {"RemoteException": {"exception": simple,
                                                       "javaClassName": f"org.apache.hadoop.{exception}"
                                                       if package else f"java.io.{simple}",
                                                       "message": message}})

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _route(self, method: str) -> None:
                url = urlparse(self.path)
                if not url.path.startswith(PREFIX):
                    return self._error(404, "UnsupportedOperationException", f"no such path {url.path}")
                hdfs_path = url.path[len(PREFIX):] or "/"
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                op = query.get("op", "").upper()
                fs.requests.append(f"{'nn' if namenode else 'dn'} {method} {op} {hdfs_path}")
                if namenode:
                    with fs._lock:
                        if fs.failures_left > 0:
                            fs.failures_left -= 1
                            if method == "PUT":
                                self._read_body()
                            return self._error(503, "ipc.RetriableException", "NameNode is busy; retry")
                try:
                    path = fs.local(hdfs_path)
                except ValueError:
                    return self._error(400, "IllegalArgumentException", f"invalid path {hdfs_path}")
                handler = getattr(self, f"_{'nn' if namenode else 'dn'}_{op.lower()}", None)
                if handler is None:
                    return self._error(400, "UnsupportedOperationException", f"{op} is not supported")
                handler(method, hdfs_path, path, query)

            def do_GET(self) -> None:
                self._route("GET")

            def do_PUT(self) -> None:
                self._route("PUT")

            def do_DELETE(self) -> None:
                self._route("DELETE")

            def do_POST(self) -> None:
                self._route("POST")

            def _redirect(self, hdfs_path: str, query: dict[str, str]) -> None:
                if self.command == "PUT":
                    self._read_body()  # a client may send data with the first request; it is ignored
                location = (f"http://127.0.0.1:{fs.datanode.server_address[1]}{PREFIX}{quote(hdfs_path)}?"
                            + "&".join(f"{k}={quote(v)}" for k, v in query.items()))
                self._reply(307, None, {"Location": location})

            # NameNode operations
            def _nn_create(self, method: str, hdfs_path: str, path: Path, query: dict[str, str]) -> None:
                if path.exists() and query.get("overwrite", "false") != "true":
                    return self._error(403, "fs.FileAlreadyExistsException", f"{hdfs_path} already exists")
                self._redirect(hdfs_path, query)

            def _nn_open(self, method: str, hdfs_path: str, path: Path, query: dict[str, str]) -> None:
                if not path.is_file():
                    return self._error(404, "FileNotFoundException", f"File does not exist: {hdfs_path}")
                self._redirect(hdfs_path, query)

            _nn_getfilechecksum = _nn_open

            def _nn_getfilestatus(self, method: str, hdfs_path: str, path: Path, query: dict[str, str]) -> None:
                if not path.exists():
                    return self._error(404, "FileNotFoundException", f"File does not exist: {hdfs_path}")
                self._reply(200, {"FileStatus": fs.status(path, "")})

            def _nn_liststatus(self, method: str, hdfs_path: str, path: Path, query: dict[str, str]) -> None:
                if not path.exists():
                    return self._error(404, "FileNotFoundException", f"File {hdfs_path} does not exist.")
                children = sorted(path.iterdir()) if path.is_dir() else [path]
                statuses = [fs.status(c, c.name if path.is_dir() else "") for c in children]
                self._reply(200, {"FileStatuses": {"FileStatus": statuses}})

            def _nn_mkdirs(self, method: str, hdfs_path: str, path: Path, query: dict[str, str]) -> None:
                path.mkdir(parents=True, exist_ok=True)
                self._reply(200, {"boolean": True})

            def _nn_rename(self, method: str, hdfs_path: str, path: Path, query: dict[str, str]) -> None:
                target = fs.local(query["destination"])
                if not path.exists() or target.exists():
                    return self._reply(200, {"boolean": False})
                target.parent.mkdir(parents=True, exist_ok=True)
                path.rename(target)
                self._reply(200, {"boolean": True})

            def _nn_delete(self, method: str, hdfs_path: str, path: Path, query: dict[str, str]) -> None:
                if not path.exists():
                    return self._reply(200, {"boolean": False})
                if path.is_dir():
                    if any(path.iterdir()) and query.get("recursive") != "true":
                        return self._error(403, "fs.PathIsNotEmptyDirectoryException", f"{hdfs_path} is non empty")
                    shutil.rmtree(path)
                else:
                    path.unlink()
                self._reply(200, {"boolean": True})

            # DataNode operations
            def _dn_create(self, method: str, hdfs_path: str, path: Path, query: dict[str, str]) -> None:
                data = self._read_body()
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                self._reply(201, None, {"Location": f"hdfs://127.0.0.1{hdfs_path}"})

            def _dn_open(self, method: str, hdfs_path: str, path: Path, query: dict[str, str]) -> None:
                data = path.read_bytes()
                offset = int(query.get("offset", 0))
                length = int(query["length"]) if "length" in query else len(data) - offset
                self._reply(200, body=data[offset:offset + length])

            def _dn_getfilechecksum(self, method: str, hdfs_path: str, path: Path, query: dict[str, str]) -> None:
                self._reply(200, {"FileChecksum": hdfs_checksum(path)})

        return Handler


if __name__ == "__main__":  # a manual check: python tests/webhdfs_server.py /tmp/hdfs-root
    import sys

    server = WebHdfs(Path(sys.argv[1])).start()
    print(server.url, flush=True)
    while True:
        time.sleep(3600)
