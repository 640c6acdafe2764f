"""Reading a do-not-call list: the phone numbers of a file, in E.164, one line at a time.

The first line that is not blank or a comment tells the shape of the file:

- one number per line, in any form `phonenumbers` reads (`+1 202-555-0123`; `(202) 555-0123`
  with a region); text after `#` is a comment;
- CSV whose header names a `phone` or `number` column (or `phone number`, `telephone`), and
  perhaps an `area code` column, put in front of the number (numbers split in two columns);
- the US FTC's download shape, `area code,number` (`202,5550123`) without a header.

Blank lines and lines starting with `#` are skipped in every shape. A number without its
country code is read in `region` (`US`); without a region it is invalid. A line that holds no
number is noted (line number, text, why) and skipped; nothing holds more than one line at a
time, so a national list of any size streams through, and a line longer than `MAX_LINE` bytes
is not even read whole.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import phonenumbers

from dee.errors import DeeError, InvalidNumberError, NumberFileError
from dee.shell.numbers import E164, normalise

MAX_LINE = 1024  # bytes: no number is written this long
SHOWN = 5  # invalid lines quoted in a refusal
EXCERPT = 40  # characters of an invalid line quoted
PHONE_COLUMNS = {"phone", "number", "phone number", "telephone", "telephone number"}
AREA_COLUMNS = {"area code", "areacode", "area"}
_FTC_ROW = re.compile(r"\d{3},\d{7}")


@dataclass(frozen=True)
class InvalidLine:
    line: int
    text: str
    why: str


@dataclass
class Scan:
    """What reading a file found so far: numbers, invalid lines, the first few of those."""

    numbers: int = 0
    invalid: int = 0
    first_invalid: list[InvalidLine] = field(default_factory=list)

    def note(self, bad: InvalidLine) -> None:
        self.invalid += 1
        if len(self.first_invalid) < SHOWN:
            self.first_invalid.append(bad)

    def refusal(self, path: str) -> NumberFileError:
        return NumberFileError(path, self.invalid, [(b.line, b.text, b.why) for b in self.first_invalid])


def region_of(region: str | None) -> str | None:
    """The region, checked (`phonenumbers` knows it), upper-cased; None stays None."""
    if region is None:
        return None
    if region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise DeeError(f"unknown region {region!r}: a country code such as US, GB or DE")
    return region.upper()


def read_numbers(path: str | Path, region: str | None, scan: Scan) -> Iterator[E164]:
    """The file's numbers in E.164, in file order (duplicates included: listing counts them);
    every invalid line is noted in `scan` and skipped. A CSV file whose first line is neither
    a header with a number column nor `area code,number` is refused whole (NumberFileError)."""
    region = region_of(region)
    with open(path, "rb") as handle:
        lines = _content(handle, scan)
        first = next(lines, None)
        if first is None:
            return
        for line, text, number in _shaped(str(path), first, lines):
            try:
                if not number:
                    raise InvalidNumberError(number, "no number in the phone column")
                normalised = normalise(number, region)
            except InvalidNumberError as exc:
                scan.note(InvalidLine(line, text[:EXCERPT], exc.why))
                continue
            scan.numbers += 1
            yield normalised


def check(path: str | Path, region: str | None) -> Scan:
    """Read the whole file and count its numbers and invalid lines (nothing is kept)."""
    scan = Scan()
    for _ in read_numbers(path, region, scan):
        pass
    return scan


Lines = Iterator[tuple[int, str]]  # (line number, text)
Rows = Iterator[tuple[int, str, str]]  # (line number, text, the number in it)


def _shaped(path: str, first: tuple[int, str], lines: Lines) -> Rows:
    """(line number, text, number) per data line, in the shape the first line tells."""
    line, text = first
    if "," not in text.split("#", 1)[0]:
        yield from _single(first, lines)
        return
    header = [name.strip().lower().replace("_", " ").replace("-", " ") for name in _fields(text)]
    phone = next((i for i, name in enumerate(header) if name in PHONE_COLUMNS), None)
    if phone is not None:
        area = next((i for i, name in enumerate(header) if name in AREA_COLUMNS), None)
        yield from _columns(lines, phone, area)
    elif _FTC_ROW.fullmatch(text.replace(" ", "")):
        yield from _columns(_chain(first, lines), 1, 0)
    else:
        why = "a CSV list needs a header naming a phone or number column, or the two columns area code,number"
        raise NumberFileError(path, 1, [(line, text[:EXCERPT], why)])


def _single(first: tuple[int, str], lines: Lines) -> Rows:
    for line, text in _chain(first, lines):
        number = text.split("#", 1)[0].strip()
        if number:
            yield line, text, number


def _columns(lines: Lines, phone: int, area: int | None) -> Rows:
    """The number column, after the area code column when there is one (empty when the row
    has no number: it is noted as invalid)."""
    for line, text in lines:
        row = _fields(text)
        number = row[phone].strip() if phone < len(row) else ""
        if area is not None and number:
            number = (row[area].strip() if area < len(row) else "") + number
        yield line, text, number


def _fields(text: str) -> list[str]:
    return next(csv.reader([text]), [])


def _chain(first: tuple[int, str], lines: Lines) -> Lines:
    yield first
    yield from lines


def _content(handle: BinaryIO, scan: Scan) -> Lines:
    """(line number, stripped text) of every line that is not blank or a comment; a line too
    long, or not UTF-8, is noted as invalid instead."""
    number = 0
    while raw := handle.readline(MAX_LINE + 1):
        number += 1
        if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # skip the rest of the line, a bounded read at a time
                raw = handle.readline(MAX_LINE + 1)
            scan.note(InvalidLine(number, "", f"longer than {MAX_LINE} bytes"))
            continue
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            scan.note(InvalidLine(number, raw[:EXCERPT].decode("utf-8", "replace").strip(), "not UTF-8 text"))
            continue
        if number == 1:
            text = text.removeprefix("\ufeff").strip()
        if text and not text.startswith("#"):
            yield number, text
