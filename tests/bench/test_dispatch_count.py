"""``scripts/dispatch_count.py --bytes``: bytes an eager operation moves, against closed forms."""

import torch

from scripts.dispatch_count import _Traffic


def test_an_operation_reads_its_inputs_and_writes_its_output_and_a_view_moves_nothing():
    a = torch.ones(1000)  # 4000 bytes
    b = torch.ones(1000, dtype=torch.bfloat16)  # 2000 bytes
    with _Traffic() as mode:
        c = a * 2.0  # reads 4000, writes 4000
        d = a.view(10, 100)  # a view: nothing
        e = (a + b).sum()  # add: 4000 + 2000 read, 4000 written; sum: 4000 read, 4 written
        a.mul_(3.0)  # in place: reads and writes 4000
    assert c.shape == (1000,) and d.shape == (10, 100) and e.dim() == 0
    assert dict(mode.counts) == {"aten.mul": 8000, "aten.mul_": 8000, "aten.add": 10000, "aten.sum": 4004}
