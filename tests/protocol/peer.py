"""A bare protocol peer for tests: a DEALER socket that sends whatever frames a test builds."""
from __future__ import annotations

import zmq

from protocol import messages as m
from protocol.codec import decode, encode
from protocol.messages import PROTOCOL_VERSION, REPLIES

SESSION = "sess-1"


class Peer:
    """Sends frames as they are and decodes the reply as a peer speaking ``version`` would."""

    def __init__(self, address: str, version=PROTOCOL_VERSION) -> None:
        self.version = version
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(address)

    def ask(self, frames: list) -> tuple:
        self.sock.send_multipart(frames)
        assert self.sock.poll(5000), "no reply within 5 s"
        return decode(self.sock.recv_multipart(), types=REPLIES, version=self.version)

    def send(self, msg: m.Message, seq: int, session: str = SESSION) -> tuple:
        return self.ask(encode(msg, seq, session, version=self.version))

    def close(self) -> None:
        self.sock.close()
