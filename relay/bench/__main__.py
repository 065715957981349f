"""``python -m relay.bench``: the same as ``relay bench``."""

from relay.cli.bench import bench

if __name__ == "__main__":
    bench(prog_name="python -m relay.bench")
