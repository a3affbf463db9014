"""Read ACK files written by Renkei with hl7apy (an independent HL7 v2 implementation).

Usage: read_acks.py FILE...  Prints one JSON object per file: MSH-3/4 and MSH-5/6, MSA-1,
MSA-2, the ERR fields and whether hl7apy's strict validation accepts the message. Bytes are decoded with Python's
own codecs (iso2022_jp for MSH-18 ISO IR87), not Renkei's.
"""
import json
import sys

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.parser import parse_message, parse_segments


def decode(raw: bytes) -> str:
    msh = raw.split(b"\r", 1)[0]
    if b"ISO IR87" in msh:
        return raw.decode("iso2022_jp")
    if b"UNICODE UTF-8" in msh:
        return raw.decode("utf-8")
    return raw.decode("ascii")


def value(segment, name: str) -> str:
    """A field's ER7 text, or "" when the field does not exist in this version."""
    try:
        return getattr(segment, name).value or ""
    except Exception:
        return ""


for path in sys.argv[1:]:
    with open(path, "rb") as f:
        text = decode(f.read())
    try:
        version = text.split("\r", 1)[0].split("|")[11]
        if version == "2.3":
            # v2.3 MSH-9 has no structure component, and hl7apy cannot infer the ACK
            # structure from it: name the structure, still validating every segment strictly.
            msg = Message("ACK", version=version, validation_level=VALIDATION_LEVEL.STRICT)
            for seg in parse_segments(text.strip("\r"), version=version,
                                      validation_level=VALIDATION_LEVEL.STRICT):
                if seg.name == "MSH":
                    msg.msh = seg
                else:
                    msg.add(seg)
        else:
            msg = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    except Exception as e:
        sys.exit(f"{path}: {type(e).__name__}: {e}\n{text!r}")
    errs = [
        {f"err{n}": value(err, f"err_{n}") for n in (1, 2, 3, 4)}
        for err in msg.children
        if err.name == "ERR"
    ]
    print(json.dumps({
        "file": path,
        "type": msg.msh.msh_9.value,
        # Who the ACK is from (MSH-3/4) and to (MSH-5/6).
        "from": [msg.msh.msh_3.value or "", msg.msh.msh_4.value or ""],
        "to": [msg.msh.msh_5.value or "", msg.msh.msh_6.value or ""],
        "version": msg.msh.msh_12.value,
        "msa1": msg.msa.msa_1.value,
        "msa2": msg.msa.msa_2.value,
        "err": errs,
        "valid": msg.validate(),
    }, ensure_ascii=False))
