"""The embeddings benchmark's pieces that need no server: commands, the table, the transport
measurement (a real run at a small size)."""

from __future__ import annotations

from bench import report
from bench.micro import embed_transport

from bench.scenarios import embeddings


def test_both_servers_get_the_same_embedding_settings() -> None:
    args = embeddings.parser().parse_args(["-t", "3", "-c", "1024", "--pooling", "cls"])
    ours = embeddings.server_command("ggserve", args, "m.gguf", 9000)
    theirs = embeddings.server_command("llama-server", args, "m.gguf", 9001)
    for command in (ours, theirs):
        joined = " ".join(command)
        assert "--embeddings --pooling cls" in joined and "-t 3" in joined and "-c 1024" in joined
        assert "-b 512 -ub 512" in joined
    assert ours[ours.index("-np") + 1] == "64" and theirs[theirs.index("-np") + 1] == "8"


def test_table_gives_each_server_and_the_ratio() -> None:
    loads = [embeddings.Load("batch-256", 256, 1), embeddings.Load("clients-16", 1, 16)]
    rows = [{"server": s, "load": load.name, "inputs_per_s": rate}
            for s, rate in (("ggserve", 30.0), ("llama-server", 15.0)) for load in loads]
    table = report.ratio_table(rows, ["ggserve", "llama-server"], [load.name for load in loads], "inputs_per_s",
                               "inputs/s", 1)
    assert "| batch-256 | 30.0 | 15.0 | 2.00x |" in table and table.count("\n") == 4


def test_the_transport_measurement_runs(capsys) -> None:
    assert embed_transport.main(["--inputs", "32", "--dim", "16", "--steps", "4", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert "socket (rows in the messages)" in out and "shared memory (ArrayRef handles)" in out


def test_the_default_loads_are_the_issues() -> None:
    args = embeddings.parser().parse_args([])
    assert (args.batch_sizes, args.clients, args.inputs) == ("1,16,256", 16, 256)
