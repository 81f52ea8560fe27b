"""Rewrite bench/registry_snapshot.py from the live method and metric registries (after adding or changing one)."""

from bench.choices import refresh_snapshot

if __name__ == "__main__":
    print(f"wrote {refresh_snapshot()}")
