"""``multipart/form-data`` request bodies, as the drop-in front and the gateway simulator read
them: the named parts of a body, file parts (:class:`Upload`) told apart from text fields.

Each reader decides itself how strictly a text field is decoded and how names are spelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser


class Unreadable(ValueError):
    """The body cannot be parsed as MIME (the text says why)."""


class NoParts(ValueError):
    """The body parses but has no parts (or its content type no boundary)."""


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart request."""

    filename: str
    content_type: str
    data: bytes = field(repr=False)

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class Part:
    """One named part: its bytes and declared charset; ``upload`` set when it is a file."""

    name: str
    data: bytes = field(repr=False)
    charset: str | None
    upload: Upload | None


def read_parts(content_type: str, body: bytes) -> list[Part]:
    """The named parts of ``body`` in order (parts without a name are skipped).

    Raises :class:`Unreadable` or :class:`NoParts`."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    try:
        message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    except (ValueError, LookupError) as exc:
        raise Unreadable(str(exc)) from None
    if not message.is_multipart():
        raise NoParts("no parts (or no boundary)")
    parts = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        upload = None if filename is None else Upload(filename, part.get_content_type(), data)
        parts.append(Part(name, data, part.get_content_charset(), upload))
    return parts
