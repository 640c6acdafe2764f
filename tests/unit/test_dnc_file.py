"""Reading do-not-call lists (`dee.ops.dnc_file`): the three shapes, comments and blank lines,
numbers normalised to E.164 in a region, duplicates kept for listing to count, invalid lines
noted with their line number and why, hostile lines (too long, not UTF-8) bounded, and a file
streamed a line at a time."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import pytest

from dee.errors import DeeError, NumberFileError
from dee.ops.dnc_file import MAX_LINE, InvalidLine, Scan, check, read_numbers, region_of
from dee.shell.numbers import E164, normalise


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "dnc.txt"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def read(path: Path, region: str | None = "US") -> tuple[list[str], Scan]:
    scan = Scan()
    return list(read_numbers(path, region, scan)), scan


def test_one_number_per_line_in_any_form_with_comments_and_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "# national registry, 2026-01\n\n+1 202-555-0101\n(202) 555-0102  # the office\n"
                           "  202.555.0103  \r\n+44 20 7946 0958\n\t\n# the end\n")  # fmt: skip
    numbers, scan = read(path)
    assert numbers == ["+12025550101", "+12025550102", "+12025550103", "+442079460958"]
    assert (scan.numbers, scan.invalid) == (4, 0)
    assert all(isinstance(n, E164) for n in numbers)


def test_duplicates_are_kept_for_listing_to_count(tmp_path: Path) -> None:
    numbers, _ = read(write(tmp_path, "+12025550101\n202 555 0101\n1-202-555-0101\n"))
    assert numbers == ["+12025550101"] * 3


def test_without_a_region_only_numbers_with_their_country_code_are_read(tmp_path: Path) -> None:
    numbers, scan = read(write(tmp_path, "+12025550101\n2025550102\n"), region=None)
    assert numbers == ["+12025550101"]
    assert scan.first_invalid == [InvalidLine(2, "2025550102", "no country code (and no region for national numbers)")]


def test_a_region_reads_national_numbers_of_that_country(tmp_path: Path) -> None:
    numbers, _ = read(write(tmp_path, "020 7946 0958\n+1 202 555 0101\n"), region="gb")
    assert numbers == ["+442079460958", "+12025550101"]


def test_csv_with_a_phone_or_number_column(tmp_path: Path) -> None:
    path = write(tmp_path, 'name,Phone,added\n"Doe, Jane",+1 202 555 0101,2026-01-02\n# a comment\nSam,(202) 555-0102,x\n')
    assert read(path)[0] == ["+12025550101", "+12025550102"]
    path = write(tmp_path, "id,number\n1,2025550103\n2,\n3\n")
    numbers, scan = read(path)
    assert numbers == ["+12025550103"]
    assert scan.first_invalid == [InvalidLine(3, "2,", "no number in the phone column"),
                                  InvalidLine(4, "3", "no number in the phone column")]  # fmt: skip


def test_csv_with_the_area_code_in_a_column_of_its_own(tmp_path: Path) -> None:
    path = write(tmp_path, "Area_Code,Phone_Number\n202,5550101\n212,5550102\n")
    assert read(path)[0] == ["+12025550101", "+12125550102"]


def test_the_ftc_shape_area_code_comma_number_without_a_header(tmp_path: Path) -> None:
    path = write(tmp_path, "202,5550101\n212, 5550102\n\n202,555\n")
    numbers, scan = read(path)
    assert numbers == ["+12025550101", "+12125550102"]
    assert [(b.line, b.text) for b in scan.first_invalid] == [(4, "202,555")]


def test_a_csv_without_a_number_column_is_refused_whole(tmp_path: Path) -> None:
    path = write(tmp_path, "# exported\nname,email\nJane,jane@acme.test\n")
    with pytest.raises(NumberFileError) as raised:
        read(path)
    assert raised.value.first == [(2, "name,email", "a CSV list needs a header naming a phone or number column, "
                                   "or the two columns area code,number")]  # fmt: skip


def test_invalid_lines_are_counted_and_the_first_few_named(tmp_path: Path) -> None:
    lines = ["+12025550101", "call me", "555-0123", "+1 202 555 01", "+999 1234567", "+12025550102",
             "x1", "x2", "x3"]  # fmt: skip
    path = write(tmp_path, "\n".join(lines) + "\n")
    scan = check(path, "US")
    assert (scan.numbers, scan.invalid) == (2, 7)
    assert [(b.line, b.text, b.why) for b in scan.first_invalid] == [
        (2, "call me", "not a phone number"),
        (3, "555-0123", "a local number: its area code is missing"),
        (4, "+1 202 555 01", "too short for its country"),
        (5, "+999 1234567", "unknown country code"),
        (7, "x1", "not a phone number"),
    ]
    message = str(scan.refusal(str(path)))
    assert message.startswith(f"{path}: 7 invalid lines (line 2 'call me': not a phone number; line 3 '555-0123': ")
    assert message.endswith("line 7 'x1': not a phone number; and 2 more); nothing imported")


def test_hostile_lines_are_bounded(tmp_path: Path) -> None:
    path = write(tmp_path, b"\xef\xbb\xbf+12025550101\n" + b"9" * (MAX_LINE * 5) + b"\n\xff\xfe2025550102\n+12025550103")
    numbers, scan = read(path)
    assert numbers == ["+12025550101", "+12025550103"]  # the BOM is no part of the first line; no newline at the end is fine
    assert [(b.line, b.why) for b in scan.first_invalid] == [(2, f"longer than {MAX_LINE} bytes"), (3, "not UTF-8 text")]


def test_a_file_is_read_as_it_is_consumed(tmp_path: Path) -> None:
    path = write(tmp_path, "".join(f"+1202555{i:04d}\n" for i in range(10_000)))
    scan = Scan()
    assert list(islice(read_numbers(path, None, scan), 3)) == ["+12025550000", "+12025550001", "+12025550002"]
    assert scan.numbers == 3


def test_an_empty_file_has_no_numbers(tmp_path: Path) -> None:
    assert read(write(tmp_path, "# nothing yet\n\n"))[0] == []


def test_an_unknown_region_is_refused() -> None:
    assert region_of("us") == "US" and region_of(None) is None
    with pytest.raises(DeeError, match="unknown region 'XX'"):
        region_of("XX")


def test_normalise_is_the_rule_for_contacts_too() -> None:
    assert normalise("+1 (202) 555-0101") == "+12025550101"
    assert normalise("0049 30 1234567", "DE") == "+49301234567"
