// mta_plan.h — multi-tensor launch planning for the CUDA step kernels, in plain C++ (no CUDA, no
// torch): how a tensor is cut into chunks (one chunk per thread block), how a list of tensors is
// split across launches, and the POD kernel arguments (< 4 KB, as ATen's MultiTensorApply.cuh).
// The geometry functions are TC_HOST_DEVICE: the kernels call the very functions that
// csrc/tests/test_mta.cpp checks on the CPU. Used by csrc/cuda/optim_step.cu.
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "tigercore/params.h"

namespace tigercore {
namespace mta {

constexpr int kBlockSize = 256;                  // threads per block, every step kernel
constexpr int kChunkLog2 = 16;
constexpr int64_t kChunk = int64_t(1) << kChunkLog2;  // elements per block (update and reduction)
constexpr int kMaxTensors = 40;                  // tensors per launch (kernel-argument budget)
constexpr int kMaxSteps = 480;                   // step counters per advance_steps launch
constexpr size_t kMaxKernelArgBytes = 4096;      // the classic CUDA kernel-parameter limit
constexpr int64_t kMaxBlocksPerLaunch = 0x7FFFFFFF;  // gridDim.x limit

// [note: chunks and slots]
// A tensor is a list of rows of row_len elements (Tiger E: its last dimension; everything else:
// one row, the whole tensor). Chunks never cross a row when a row fits in kChunk: a chunk then
// holds rows_per_chunk whole rows. A longer row is cut into `pieces` chunks of kChunk elements
// (the last one shorter). A "slot" is one (row, piece): the unit of Tiger's stage-1 sum of
// squares, numbered row * pieces + piece. Stage 2 adds a row's pieces in piece order. Every
// boundary depends only on (numel, row_len), so every sum, and so every bit of every result, is
// independent of how tensors are grouped into launches.
struct Grid {
  int64_t rows;            // rows of row_len elements
  int64_t pieces;          // chunks per row (1 when the row fits in kChunk)
  int64_t rows_per_chunk;  // whole rows per chunk (1 when pieces > 1)
  int64_t chunks;
  TC_HOST_DEVICE int64_t slots() const { return rows * pieces; }
};

TC_FN Grid grid_of(int64_t numel, int64_t row_len) {
  if (numel <= 0 || row_len <= 0) return Grid{0, 1, 1, 0};
  const int64_t rows = numel / row_len;
  if (row_len <= kChunk) {
    const int64_t rpc = kChunk / row_len;
    return Grid{rows, 1, rpc, (rows + rpc - 1) / rpc};
  }
  const int64_t pieces = (row_len + kChunk - 1) / kChunk;
  return Grid{rows, pieces, 1, rows * pieces};
}

struct Span {
  int64_t start;
  int32_t len;
  int32_t rlen;
  int32_t nrows;
  int64_t row;
  int64_t slot;
};

// Chunk c of a tensor: elements [start, start + len) = nrows slot-rows of rlen elements each;
// slot-row r is row (row + r) and slot (slot + r) of the tensor. Only 32-bit divisions (c < 2^31,
// row_len <= kChunk or pieces <= c): a 64-bit division is a subroutine call on the GPU.
TC_FN Span span_of(int64_t numel, int64_t row_len, int64_t c) {
  Span s;
  if (row_len <= kChunk) {
    const int64_t rpc = int64_t(uint32_t(kChunk) / uint32_t(row_len));
    const int64_t cap = rpc * row_len;
    s.row = c * rpc;
    s.start = s.row * row_len;
    s.len = int32_t(numel - s.start < cap ? numel - s.start : cap);
    s.rlen = int32_t(row_len);
    s.nrows = int32_t(uint32_t(s.len) / uint32_t(row_len));
    s.slot = s.row;
  } else {
    const int64_t pieces = (row_len + kChunk - 1) >> kChunkLog2;
    s.row = pieces > c ? 0 : int64_t(uint32_t(c) / uint32_t(pieces));
    const int64_t off = (c - s.row * pieces) << kChunkLog2;
    s.len = int32_t(row_len - off < kChunk ? row_len - off : kChunk);
    s.rlen = s.len;
    s.nrows = 1;
    s.start = s.row * row_len + off;
    s.slot = c;  // = row * pieces + piece
  }
  return s;
}

// ---- kernel arguments -----------------------------------------------------------------------
// One tensor of a launch. ptr: param, grad, exp_avg, aux (kahan_comp / master_param or nullptr).
struct MtaTensor {
  void* ptr[4];
  int64_t numel;
  int64_t row_len;
  const int64_t* step;  // state['step'] on entry, read on the device
  int64_t slot0;        // Tiger: first slot of this tensor in the workspace's slot sums
  int64_t row0;         // Tiger K/E: first row in the workspace's per-row step sizes
  uint32_t param_id;    // stochastic-rounding key
  int32_t ordinal;      // index of the tensor in the call (its guard flag)
};

// Everything a launch knows about its tensors, passed by value as a kernel argument. Block b
// works on chunk (b - block_start[j]) of tensor j, where block_start[j] <= b < block_start[j+1].
struct MtaArgs {
  MtaTensor t[kMaxTensors];
  int32_t block_start[kMaxTensors + 1];
  int32_t n;
};
// What remains of the 4 KB for the other kernel arguments (SignStepCall and device pointers).
constexpr size_t kArgBudget = kMaxKernelArgBytes - 512;
static_assert(sizeof(MtaArgs) <= kArgBudget, "multi-tensor arguments must stay under 4 KB");

struct BlockLoc {
  int32_t tensor;  // index into MtaArgs::t
  int32_t chunk;
};

// Binary search of block_start (the same answer for every thread of a block).
TC_FN BlockLoc locate_block(const MtaArgs& a, int64_t block) {
  int32_t lo = 0, hi = a.n - 1;
  while (lo < hi) {
    const int32_t mid = (lo + hi + 1) >> 1;
    if (a.block_start[mid] <= block) lo = mid;
    else hi = mid - 1;
  }
  return BlockLoc{lo, int32_t(block - a.block_start[lo])};
}

// advance_steps: one thread per counter.
struct StepArgs {
  int64_t* step[kMaxSteps];
  int32_t n;
};
static_assert(sizeof(StepArgs) + 16 <= kMaxKernelArgBytes, "step arguments must stay under 4 KB");

// [note: vector path]
// A chunk takes the 16-byte vector path iff every pointer it touches is 16-byte aligned and its
// first element is a multiple of kVec (the elements per vector: 16 / the smallest element size).
// The elements past the last whole vector go through the scalar path.
TC_FN bool chunk_is_aligned(const MtaTensor& t, int64_t start, int vec) {
  uintptr_t bits = 0;
  for (int k = 0; k < 4; ++k) bits |= reinterpret_cast<uintptr_t>(t.ptr[k]);
  return (bits & 15u) == 0 && start % vec == 0;
}

// ---- host planning --------------------------------------------------------------------------
// Where Tiger's per-slot sums, per-row step sizes and per-tensor guard flags live in the one
// workspace allocation of a call: [double sums[slots] | double eta[rows] | int32 flags[n]].
struct WorkspaceLayout {
  std::vector<int64_t> slot0, row0;
  int64_t slots = 0, rows = 0, tensors = 0;
  size_t eta_offset() const { return size_t(slots) * sizeof(double); }
  size_t flags_offset() const { return eta_offset() + size_t(rows) * sizeof(double); }
  size_t bytes() const { return flags_offset() + size_t(tensors) * sizeof(int32_t); }
};

inline WorkspaceLayout workspace_layout(const std::vector<SignStepTensor>& ts) {
  WorkspaceLayout w;
  w.tensors = int64_t(ts.size());
  for (const SignStepTensor& t : ts) {
    const Grid g = grid_of(t.numel, t.row_len);
    w.slot0.push_back(w.slots);
    w.row0.push_back(w.rows);
    w.slots += g.slots();
    w.rows += g.rows;
  }
  return w;
}

// One launch: call indices of its tensors and the prefix sum of their blocks.
struct Launch {
  std::vector<int32_t> tensors;
  std::vector<int64_t> block_start;  // size tensors.size() + 1
  int64_t blocks() const { return block_start.back(); }
};

// Splits `order` (call indices, in launch order) into launches of at most max_tensors tensors
// and max_blocks blocks; tensors with no blocks are left out. A tensor is never split.
template <typename BlocksOf>
std::vector<Launch> plan_launches(const std::vector<int32_t>& order, BlocksOf&& blocks_of,
                                  int max_tensors = kMaxTensors, int64_t max_blocks = kMaxBlocksPerLaunch) {
  std::vector<Launch> out;
  Launch cur;
  cur.block_start.push_back(0);
  for (int32_t i : order) {
    const int64_t b = blocks_of(i);
    if (b <= 0) continue;
    if (!cur.tensors.empty() && (int(cur.tensors.size()) == max_tensors || cur.blocks() + b > max_blocks)) {
      out.push_back(cur);
      cur = Launch{};
      cur.block_start.push_back(0);
    }
    cur.tensors.push_back(i);
    cur.block_start.push_back(cur.blocks() + b);
  }
  if (!cur.tensors.empty()) out.push_back(cur);
  return out;
}

inline int64_t update_blocks(const SignStepTensor& t) { return grid_of(t.numel, t.row_len).chunks; }
inline int64_t eta_blocks(const SignStepTensor& t) {  // Tiger stage 2: one thread per row
  return (grid_of(t.numel, t.row_len).rows + kBlockSize - 1) / kBlockSize;
}

// Stable grouping of call indices by a key (first-appearance order of the keys), e.g. the
// kernel instantiation each tensor needs.
template <typename Key, typename KeyOf>
std::vector<std::pair<Key, std::vector<int32_t>>> group_by(int32_t n, KeyOf&& key_of) {
  std::vector<std::pair<Key, std::vector<int32_t>>> groups;
  for (int32_t i = 0; i < n; ++i) {
    const Key k = key_of(i);
    size_t g = 0;
    while (g < groups.size() && !(groups[g].first == k)) ++g;
    if (g == groups.size()) groups.push_back({k, {}});
    groups[g].second.push_back(i);
  }
  return groups;
}

inline MtaTensor mta_tensor(const SignStepTensor& t, const int64_t* step, int64_t slot0, int64_t row0,
                            int32_t ordinal) {
  return MtaTensor{{t.param, t.grad, t.exp_avg, t.aux}, t.numel, t.row_len, step, slot0, row0,
                   t.param_id, ordinal};
}

// Packs one launch; tensors[i] is the MtaTensor of call index i.
inline MtaArgs pack_args(const Launch& l, const std::vector<MtaTensor>& tensors) {
  MtaArgs a{};
  a.n = int32_t(l.tensors.size());
  for (int32_t j = 0; j < a.n; ++j) {
    a.t[j] = tensors[size_t(l.tensors[size_t(j)])];
    a.block_start[j] = int32_t(l.block_start[size_t(j)]);
  }
  a.block_start[a.n] = int32_t(l.blocks());
  return a;
}

// Step counters in launches of at most kMaxSteps.
inline std::vector<StepArgs> pack_steps(const std::vector<int64_t*>& steps) {
  std::vector<StepArgs> out;
  for (size_t b = 0; b < steps.size(); b += kMaxSteps) {
    StepArgs a{};
    a.n = int32_t(steps.size() - b < size_t(kMaxSteps) ? steps.size() - b : size_t(kMaxSteps));
    for (int32_t k = 0; k < a.n; ++k) a.step[k] = steps[b + size_t(k)];
    out.push_back(a);
  }
  return out;
}

}  // namespace mta
}  // namespace tigercore
