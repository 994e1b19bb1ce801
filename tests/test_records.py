"""The records check (squeeze/records.py): every part's tag moves when any byte of it moves, and
only that part is named; informational records stay outside."""

from __future__ import annotations

import pytest

from squeeze import records

META = {
    "format": "squeeze", "format_version": "2", "spec": '{"D":8,"d":2,"gen":"threefry2x32-20","kind":"dense","p":{},"seed":"3"}',
    "params": "w:8:u1", "theta": '{"enc":"f16"}', "weights_sha256": "ab" * 32, "bufs": '[["bn.mean","f32h",[2]]]',
    "buffers_sha256": "cd" * 32, "arch": '{"ref":"squeeze.zoo:MLP"}', "data": '{"classes":10,"input_shape":[64],"pre":{"scale":0.0625}}',
    "base": "ef" * 32, "metrics": '{"test_accuracy":0.5}', "created_by": "squeeze 0.1.0",
}
HEADER = {"theta_d": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}, "bufs": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}}
BODY = bytes(range(8))


def check(meta=META, header=HEADER, body=BODY) -> str:
    return records.encode(records.tags(meta, header, body))


def test_whole_records_pass_and_the_value_is_compact():
    stored = check()
    assert len(stored) == records.ENCODED_LENGTH == 32
    assert records.damaged(stored, META, HEADER, BODY) == []


@pytest.mark.parametrize("key,part", [("spec", "recipe"), ("params", "recipe"), ("theta", "recipe"), ("weights_sha256", "recipe"),
                                      ("bufs", "buffers"), ("buffers_sha256", "buffers"), ("arch", "architecture"),
                                      ("data", "input description"), ("base", "base")])
def test_a_changed_metadata_value_names_its_part(key, part):
    stored = check()
    for changed in (META[key][:-1] + chr(ord(META[key][-1]) ^ 1), META[key] + " ", None):
        meta = dict(META)
        if changed is None:
            del meta[key]
        else:
            meta[key] = changed
        assert records.damaged(stored, meta, HEADER, BODY) == [part], (key, changed)


def test_the_input_scale_of_the_issue_is_caught():
    stored = check()
    meta = dict(META, data=META["data"].replace("0.0625", "0.0626"))
    assert records.damaged(stored, meta, HEADER, BODY) == ["input description"]


@pytest.mark.parametrize("at,part", [(0, "theta_d"), (3, "theta_d"), (4, "buffers"), (7, "buffers")])
def test_a_flipped_tensor_byte_names_its_part(at, part):
    stored = check()
    body = bytearray(BODY)
    body[at] ^= 0x10
    assert records.damaged(stored, META, HEADER, bytes(body)) == [part]


def test_tensor_layout_changes_are_caught():
    stored = check()
    for entry in ({"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}, {"dtype": "F16", "shape": [1, 2], "data_offsets": [0, 4]},
                  {"dtype": "F16", "shape": [2], "data_offsets": [4, 8]}, "garbage"):
        assert records.damaged(stored, META, dict(HEADER, theta_d=entry), BODY) == ["theta_d"]
    assert records.damaged(stored, META, dict(HEADER, scales={"dtype": "F32", "shape": [0], "data_offsets": [8, 8]}), BODY) == ["theta_d"]


def test_informational_records_are_outside():
    stored = check()
    meta = dict(META, metrics='{"test_accuracy":0.9}', created_by="someone else", unknown_key="x")
    assert records.damaged(stored, meta, HEADER, BODY) == []


@pytest.mark.parametrize("stored", ["", "x" * 31, "!" * 32, check()[:-1] + "+"])
def test_a_malformed_check_value_names_every_part(stored):
    assert records.damaged(stored, META, HEADER, BODY) == list(records.PARTS)


def test_offsets_outside_the_body_do_not_raise():
    header = dict(HEADER, theta_d={"dtype": "F16", "shape": [2], "data_offsets": [0, 10**12]})
    assert records.damaged(check(), META, header, BODY) == ["theta_d"]
