from .sharded import ShardedShortlistLinear
