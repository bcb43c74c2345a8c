"""Alerts to Telegram over the Bot API, off the pipeline's thread: a bounded queue drained by a
sender that keeps Telegram's rate limits (1 message/s per chat, 30/s overall) and waits out a 429's
`retry_after`; and, optionally, operator commands from the configured chats (the alert chat,
and any others named in `telegram.command_chats`), each answered in the chat that asked."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

log = logging.getLogger(__name__)
# httpx logs every request URL at INFO, and the Bot API puts the token in the URL: keep it out.
logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger("httpx").level))

#: Commands the bot answers; anything else gets the list.
COMMANDS = ("/status", "/profit", "/balance", "/positions", "/daily", "/halt", "/resume", "/flatten")
#: Answers a command: (text, chat id) -> the reply to send back to that chat.
CommandHandler = Callable[[str, str], str]


class SendRateLimiter:
    """When the next message to a chat may go: at most `per_chat` a second to one chat and
    `overall` a second in any one-second span across chats. Pure, on an injected clock."""

    def __init__(self, *, per_chat: float = 1.0, overall: float = 30.0) -> None:
        self.chat_interval = 1.0 / per_chat
        self.overall = overall
        self._last_by_chat: dict[str, float] = {}
        self._recent: deque[float] = deque()

    def earliest(self, chat_id: str, now: float) -> float:
        at = now
        last = self._last_by_chat.get(chat_id)
        if last is not None:
            at = max(at, last + self.chat_interval)
        while self._recent and self._recent[0] <= at - 1.0:
            self._recent.popleft()
        if len(self._recent) >= int(self.overall):
            at = max(at, self._recent[len(self._recent) - int(self.overall)] + 1.0)
        return at

    def sent(self, chat_id: str, at: float) -> None:
        self._last_by_chat[chat_id] = at
        self._recent.append(at)
        while len(self._recent) > int(self.overall) + 1:
            self._recent.popleft()

    def hold(self, chat_id: str, until: float) -> None:
        """Telegram said wait (429 retry_after): nothing to this chat before `until`."""
        self._last_by_chat[chat_id] = max(self._last_by_chat.get(chat_id, until), until - self.chat_interval)


@dataclass(frozen=True, slots=True)
class Outgoing:
    chat_id: str
    text: str


class TelegramNotifier:
    """`notify` never blocks: it queues (or counts a drop when the queue is full). A daemon
    thread sends in order, retrying a message until Telegram takes it or refuses it for good."""

    def __init__(
        self,
        *,
        token: str,
        chat_id: str,
        api_url: str = "https://api.telegram.org",
        per_chat_per_second: float = 1.0,
        overall_per_second: float = 30.0,
        queue_size: int = 1000,
        commands: CommandHandler | None = None,
        command_chats: Sequence[str] = (),
        poll_timeout: float = 10.0,
    ) -> None:
        self.chat_id = chat_id
        #: Chats whose commands are obeyed: the alert chat and `command_chats`.
        self.command_chats = frozenset([chat_id, *command_chats])
        self._base = f"{api_url.rstrip('/')}/bot{token}"
        self._limiter = SendRateLimiter(per_chat=per_chat_per_second, overall=overall_per_second)
        self._queue: queue.Queue[Outgoing | None] = queue.Queue(maxsize=queue_size)
        self._commands = commands
        self._poll_timeout = poll_timeout
        self._http = httpx.Client(timeout=httpx.Timeout(10.0, read=poll_timeout + 10.0))
        self._stop = threading.Event()
        self.sent = 0
        self.dropped = 0
        self.refused_commands = 0
        self._threads = [threading.Thread(target=self._send_loop, name="telegram-send", daemon=True)]
        if commands is not None:
            self._threads.append(threading.Thread(target=self._command_loop, name="telegram-commands", daemon=True))
        for t in self._threads:
            t.start()

    def __repr__(self) -> str:
        return f"TelegramNotifier(chat_id={self.chat_id!r})"  # never the token: it is in the URL

    def notify(self, text: str, chat_id: str | None = None) -> bool:
        try:
            self._queue.put_nowait(Outgoing(chat_id or self.chat_id, text[:4096]))
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def _post(self, method: str, payload: dict[str, object]) -> httpx.Response:
        return self._http.post(f"{self._base}/{method}", json=payload)

    def _send_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._deliver(item)

    def _deliver(self, item: Outgoing) -> None:
        attempts = 0
        while not self._stop.is_set():
            wait = self._limiter.earliest(item.chat_id, time.monotonic()) - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return  # closing: what is still queued is given up (close waited as long as it may)
            try:
                response = self._post("sendMessage", {"chat_id": item.chat_id, "text": item.text})
            except httpx.HTTPError as exc:
                attempts += 1
                log.warning("telegram: send failed (%s), retrying", type(exc).__name__)
                self._stop.wait(min(30.0, 0.5 * 2**attempts))
                continue
            now = time.monotonic()
            self._limiter.sent(item.chat_id, now)
            if response.status_code == 429:
                retry_after = _retry_after(response)
                self._limiter.hold(item.chat_id, now + retry_after)
                continue
            if response.is_success:
                self.sent += 1
                return
            if 500 <= response.status_code < 600:
                attempts += 1
                self._stop.wait(min(30.0, 0.5 * 2**attempts))
                continue
            # 400/403: the chat is wrong or the bot was blocked; retrying cannot help
            self.dropped += 1
            log.error("telegram: message refused with HTTP %d", response.status_code)
            return

    def _command_loop(self) -> None:
        offset = 0
        while not self._stop.is_set():
            try:
                response = self._post("getUpdates", {"offset": offset, "timeout": self._poll_timeout})
                updates = response.json().get("result", []) if response.is_success else []
            except (httpx.HTTPError, ValueError):
                self._stop.wait(1.0)
                continue
            for update in updates:
                offset = max(offset, int(update.get("update_id", 0)) + 1)
                message = update.get("message") or {}
                chat = str((message.get("chat") or {}).get("id", ""))
                text = str(message.get("text", "")).strip()
                if not text.startswith("/"):
                    continue
                if chat not in self.command_chats:
                    # Only the configured chats may steer the bot; others get nothing back.
                    self.refused_commands += 1
                    log.warning("telegram: command from an unknown chat refused")
                    continue
                assert self._commands is not None
                self.notify(self._commands(text, chat), chat_id=chat)

    def close(self, timeout: float = 5.0) -> None:
        """Sends what is queued (within `timeout`), then stops."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._threads[0].join(timeout)
        self._stop.set()
        self._threads[0].join(1.0)  # a sender waiting on the rate limit wakes at once
        for t in self._threads[1:]:
            t.join(self._poll_timeout + 1.0)
        if not any(t.is_alive() for t in self._threads):
            self._http.close()  # else a request is still in flight: its thread closes nothing


def _retry_after(response: httpx.Response) -> float:
    try:
        return float(response.json().get("parameters", {}).get("retry_after", 1))
    except ValueError:
        return float(response.headers.get("retry-after", 1))
