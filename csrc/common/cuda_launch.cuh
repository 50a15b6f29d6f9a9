#pragma once
// Launch-shape helpers shared by the CUDA kernels.
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <limits>

namespace xcops {

// Grid for "one block per item, one thread per output column": x = items, y = column tiles.
inline dim3 column_grid(int64_t items, int64_t columns, int threads) {
  const int64_t tiles = std::max<int64_t>(1, (columns + threads - 1) / threads);
  TORCH_CHECK(items <= std::numeric_limits<int32_t>::max(), "xcops: ", items,
              " rows exceed the CUDA grid limit of 2^31 - 1");
  TORCH_CHECK(tiles <= 65535, "xcops: a dimension of ", columns, " columns exceeds the CUDA grid limit of ",
              65535 * threads);
  return dim3(static_cast<unsigned>(items), static_cast<unsigned>(tiles));
}

// Grid for "one warp per item" with `warps_per_block` warps in a block.
inline unsigned warp_grid(int64_t items, int warps_per_block) {
  const int64_t blocks = (items + warps_per_block - 1) / warps_per_block;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "xcops: ", items,
              " entries exceed the CUDA grid limit");
  return static_cast<unsigned>(blocks);
}

}  // namespace xcops
