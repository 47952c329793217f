"""Hypothesis strategies shared by the fuzzing tests: JSON frame objects and byte mutations."""

from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def mutated(draw: st.DrawFn, specimens: list[bytes]) -> bytes:
    """A valid specimen with a few bit flips, overwrites, truncations, insertions or splices."""
    data = bytearray(draw(st.sampled_from(specimens)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "u16", "u32"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=200))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 100))]
        elif kind in ("u16", "u32"):  # overwrite a length or count field with an extreme value
            width = 2 if kind == "u16" else 4
            value = draw(st.sampled_from([0, 1, 2**8 * width - 1, 2 ** (8 * width) - 1]))
            data[at : at + width] = value.to_bytes(width, "big")
    return bytes(data)


_FIELD_NAMES = ["type", "token", "device", "signature", "after", "envelope", "seq", "x", "", "TYPE"]
_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.text(max_size=40)
    | st.sampled_from(["auth", "ping", "attach", "send", "ack", "AAAA", "QUJD", "=", "-1"])
    | st.uuids().map(str)
)
_json_value = st.recursive(
    _json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
frame_objects = st.dictionaries(
    st.sampled_from(_FIELD_NAMES) | st.text(max_size=6), _json_value, max_size=5
)
