"""The independent data-driven attribution for sluice's test `tests/attribution.rs`
(`data_driven_credit_agrees_with_channel_attributions_markov_model`).

Reads paths as JSON on stdin, `[{"path": ["Email", "Paid Search"], "conversions": 3, "nulls": 1,
"value": 70.0}, ...]`, runs ChannelAttribution's `markov_model` (order 1, PyPI package
ChannelAttribution; it estimates removal effects by simulating journeys) and prints
`{"channel": conversions, ...}` as JSON on stdout.

Run: $TEST_PYTHON scripts/stats/channel_attribution.py < paths.json
"""
import contextlib
import io
import json
import sys

import pandas as pd

with contextlib.redirect_stdout(io.StringIO()):  # its import prints a banner
    import ChannelAttribution as ca

# Channel names may contain spaces but never this separator.
SEP = "|"

paths = json.load(sys.stdin)
data = pd.DataFrame(
    {
        "path": [SEP.join(p["path"]) for p in paths],
        "conversions": [p["conversions"] for p in paths],
        "nulls": [p["nulls"] for p in paths],
        "value": [p["value"] for p in paths],
    }
)
with contextlib.redirect_stdout(io.StringIO()):
    result = ca.markov_model(
        data,
        var_path="path",
        var_conv="conversions",
        var_value="value",
        var_null="nulls",
        order=1,
        sep=SEP,
        nsim_start=2_000_000,
        # By default it cuts every simulated journey at the longest path in the data, which
        # biased the removal effects of the test's paths by up to 5%; 1,000 steps is unbounded here.
        max_step=1_000,
        conv_par=0.005,
        seed=7,
        verbose=False,
        flg_pro=False,
    )
table = result if isinstance(result, pd.DataFrame) else result["result"]
print(json.dumps({row.channel_name: row.total_conversions for row in table.itertuples()}))
