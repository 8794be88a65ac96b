// mta_plan.h — multi-tensor launch planning of the CUDA step kernels, in plain C++ (no CUDA, no
// torch): how a tensor is cut into chunks (one chunk per thread block), how a call's tensors are
// split across launches and stages (plan_call), and the POD kernel arguments (< 4 KB, as ATen's
// MultiTensorApply.cuh). The geometry functions are TC_HOST_DEVICE: the kernels call the very
// functions that csrc/tests/test_mta.cpp checks on the CPU. The tensors come described by the host
// plan (csrc/host/step_plan.h, tigercore/step_desc.h); used by csrc/cuda/optim_step.cu.
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "tigercore/kernel_key.h"

namespace tigercore {
namespace mta {

constexpr int kBlockSize = 256;                  // threads per block, every step kernel
constexpr int kChunkLog2 = 16;
constexpr int64_t kChunk = int64_t(1) << kChunkLog2;  // elements per block (update and reduction)
constexpr int kMaxTensors = 36;                  // tensors per launch (kernel-argument budget)
constexpr int kMaxCounters = 160;                // tensors per step-counter launch
constexpr int kCounterThreads = 128;             // threads per tensor of the step-counter kernel
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
  int32_t lead;  // flat_span: the chunk starts `lead` elements into row `row`; span_of: 0
};

// a = q d + r for d >= 1, without a 64-bit division (a subroutine call on the GPU, [note: no calls
// in the update kernels]): 32-bit when both fit, else binary long division.
struct DivMod {
  uint64_t q, r;
};
TC_FN DivMod divmod_u64(uint64_t a, uint64_t d) {
  if ((a >> 32) == 0 && (d >> 32) == 0) return DivMod{uint32_t(a) / uint32_t(d), uint32_t(a) % uint32_t(d)};
  uint64_t q = 0, r = 0;  // r < d < 2^63, so r << 1 does not overflow
  for (int b = 63; b >= 0; --b) {
    r = (r << 1) | ((a >> b) & 1u);
    q <<= 1;
    if (r >= d) r -= d, q |= 1u;
  }
  return DivMod{q, r};
}

// Chunk c of a tensor: elements [start, start + len) = nrows slot-rows of rlen elements each;
// slot-row r is row (row + r) and slot (slot + r) of the tensor. Only 32-bit divisions (c < 2^31,
// row_len <= kChunk or pieces <= c): a 64-bit division is a subroutine call on the GPU.
TC_FN Span span_of(int64_t numel, int64_t row_len, int64_t c) {
  Span s{};
  if (row_len <= kChunk) {
    const int64_t rpc = int64_t(uint32_t(kChunk) / uint32_t(row_len));
    const int64_t cap = rpc * row_len;
    s.row = c * rpc;
    s.start = s.row * row_len;
    s.len = int32_t(numel - s.start < cap ? numel - s.start : cap);
    s.rlen = int32_t(row_len);
    s.nrows = int32_t(uint32_t(s.len) / uint32_t(row_len));
    s.slot = s.row;
    s.lead = 0;
  } else {
    const int64_t pieces = (row_len + kChunk - 1) >> kChunkLog2;
    s.row = pieces > c ? 0 : int64_t(uint32_t(c) / uint32_t(pieces));
    const int64_t off = (c - s.row * pieces) << kChunkLog2;
    s.len = int32_t(row_len - off < kChunk ? row_len - off : kChunk);
    s.rlen = s.len;
    s.nrows = 1;
    s.start = s.row * row_len + off;
    s.slot = c;  // = row * pieces + piece
    s.lead = 0;
  }
  return s;
}

// ---- kernel arguments -----------------------------------------------------------------------
// One tensor of a launch. ptr: param, grad, exp_avg, aux (kahan_comp / master_param or nullptr).
struct MtaTensor {
  void* ptr[4];
  int64_t numel;
  int64_t row_len;
  const int64_t* step;  // state['step'] on entry, read on the device (nullptr for tiger_stats)
  int64_t slot0;        // Tiger: first slot of this tensor in the workspace's slot sums
  int64_t row0;         // Tiger: first row of this tensor in the plan's row layout (eta, stats)
  uint32_t param_id;    // stochastic-rounding key
  int32_t ordinal;      // index of the tensor in the call (its guard flag)
  int64_t elem_offset;  // stochastic-rounding counter of element 0 (a shard's flat offset; StepTensor)
  float* absmax;        // 8-bit momentum: the block absmax values ([note: 8-bit momentum on CUDA]), else nullptr
};

// Everything a launch knows about its tensors, passed by value as a kernel argument. Block b
// works on chunk (b - block_start[j]) of tensor j, where block_start[j] <= b < block_start[j+1].
struct MtaArgs {
  MtaTensor t[kMaxTensors];
  int32_t block_start[kMaxTensors + 1];
  int32_t n;
};
// With the call's StepCall and KernelScalars it must stay under 4 KB (sign_step_block.h checks).

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

// The step-counter kernel: one block of kCounterThreads threads per tensor advances its counter
// and marks its carried sums of squares unknown ([note: Tiger RMS on CUDA], tiger_rms.cu).
struct CounterArgs {
  int64_t* step[kMaxCounters];
  double* sums[kMaxCounters];  // Tiger K/E: the tensor's sumsq state, else nullptr
  int64_t rows[kMaxCounters];  // elements of sums[j]
  int32_t n;
};
static_assert(sizeof(CounterArgs) + 16 <= kMaxKernelArgBytes, "counter arguments must stay under 4 KB");

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
// workspace allocation of a call: [double sums[slots] | double eta[rows] | int32 flags[n]], then
// for cautious calls [uint64 kept[n] | double scale[n]] (8-byte aligned; [note: cautious]). Rows
// follow the host plan's layout (StepPlan::row0: one row per K/V tensor, one per slice of the last
// dimension for E, empty tensors included), the layout of a caller's `eta` and of tiger_stats.
struct WorkspaceLayout {
  std::vector<int64_t> slot0, row0;
  int64_t slots = 0, rows = 0, tensors = 0;
  bool caution = false;
  size_t eta_offset() const { return size_t(slots) * sizeof(double); }
  size_t flags_offset() const { return eta_offset() + size_t(rows) * sizeof(double); }
  size_t kept_offset() const { return (flags_offset() + size_t(tensors) * sizeof(int32_t) + 7) & ~size_t(7); }
  size_t scales_offset() const { return kept_offset() + size_t(tensors) * sizeof(uint64_t); }
  size_t bytes() const {
    return caution ? scales_offset() + size_t(tensors) * sizeof(double) : flags_offset() + size_t(tensors) * sizeof(int32_t);
  }
};

inline WorkspaceLayout workspace_layout(const std::vector<StepTensor>& ts, const std::vector<int64_t>& row0,
                                        int64_t rows) {
  WorkspaceLayout w;
  w.tensors = int64_t(ts.size());
  w.row0 = row0;
  w.rows = rows;
  for (const StepTensor& t : ts) {
    w.slot0.push_back(w.slots);
    w.slots += grid_of(t.numel, t.row_len).slots();
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

// [note: 8-bit momentum on CUDA]
// A tensor with 8-bit momentum is updated in flat chunks of kChunk elements (chunk c holds elements
// [c kChunk, (c + 1) kChunk)), whatever its rows: kChunk is a multiple of kQ8Block, so a chunk owns
// whole quantisation blocks and one thread block re-encodes each of them (sign_step_block.h). Tiger
// E finds the row of the chunk's element i as row + (lead + i) / rlen, a 32-bit division (rows of
// 8-bit momentum tensors are shorter than 2^31 elements: the host plan checks). Stage 1 (Tiger's
// sums) keeps the row geometry of span_of.
TC_FN Span flat_span(int64_t numel, int64_t row_len, int64_t c) {
  Span s{};
  s.start = c << kChunkLog2;
  s.len = int32_t(numel - s.start < kChunk ? numel - s.start : kChunk);
  s.rlen = int32_t(row_len);
  const DivMod rl = divmod_u64(uint64_t(s.start), uint64_t(row_len > 0 ? row_len : 1));
  s.row = int64_t(rl.q);
  s.lead = int32_t(rl.r);
  return s;  // nrows and slot: not used by the update
}
inline int64_t reduce_blocks(const StepTensor& t) { return grid_of(t.numel, t.row_len).chunks; }
inline int64_t update_blocks(const StepTensor& t) {
  if (t.momentum_dtype == DType::kCode8) return (t.numel + kChunk - 1) >> kChunkLog2;
  return grid_of(t.numel, t.row_len).chunks;
}
inline int64_t row_blocks(const StepTensor& t) {  // Tiger stage 2: one thread per row
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

inline MtaTensor mta_tensor(const StepTensor& t, const int64_t* step, int64_t slot0, int64_t row0, int32_t ordinal) {
  return MtaTensor{{t.param, t.grad, t.exp_avg, t.aux}, t.numel, t.row_len, step, slot0, row0, t.param_id, ordinal,
                   t.elem_offset, t.momentum_dtype == DType::kCode8 ? t.absmax : nullptr};
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

// Step counters (and carried sums, may be empty) in launches of at most kMaxCounters tensors.
inline std::vector<CounterArgs> pack_counters(const std::vector<int64_t*>& steps, const std::vector<double*>& sums,
                                              const std::vector<int64_t>& rows) {
  std::vector<CounterArgs> out;
  for (size_t b = 0; b < steps.size(); b += kMaxCounters) {
    CounterArgs a{};
    a.n = int32_t(steps.size() - b < size_t(kMaxCounters) ? steps.size() - b : size_t(kMaxCounters));
    for (int32_t k = 0; k < a.n; ++k) {
      a.step[k] = steps[b + size_t(k)];
      a.sums[k] = sums.empty() ? nullptr : sums[b + size_t(k)];
      a.rows[k] = sums.empty() ? 0 : rows[b + size_t(k)];
    }
    out.push_back(a);
  }
  return out;
}

// ---- the launches of one call -----------------------------------------------------------------
// [note: stages]
// A call runs up to five stages on one stream, each a list of launches:
//   reduce  Tiger stage 1 (tiger_rms.cu): per-slot sums of squares of the tensors that move and
//           the guard's per-tensor flags; one group of launches per kernel instantiation;
//   rows    Tiger stage 2: per-row step sizes from the slot sums (tiger_stats: the per-row sums);
//   caution cautious masking: each tensor's kept count over the update's launches, then its scale
//           (caution.cu, [note: cautious]);
//   update  the fused Lion / Tiger update (lion_update.cu, tiger_update.cu), per instantiation;
//   counters every step counter += 1 and Tiger's carried sums marked unknown (step_counters.cu).
// What runs is the entry's decision (Stages); csrc/tests/test_mta.cpp runs the same plan's blocks
// on the CPU.
struct Stages {
  bool reduce_sums = false;   // stage 1 sums (Tiger K/E without a caller's eta; tiger_stats)
  bool reduce_flags = false;  // stage 1 flags (the guard without a caller's nonfinite; tiger_stats)
  bool rows = false;          // stage 2 (whenever stage 1 sums)
  bool caution = false;       // cautious masking: kept counts, then each tensor's scale ([note: cautious])
  bool update = false;        // update and counters (the step ops; not tiger_stats)
};

// The stages of a Lion/Tiger step. given_eta: the caller passed Tiger's step sizes (K/E);
// given_flags: the caller passed the guard's flags and the guard is on.
inline Stages step_stages(const StepHyper& h, bool given_eta, bool given_flags) {
  const bool tiger = h.algo == Algo::kTiger;
  Stages st;
  st.reduce_sums = tiger && h.tiger_class != TigerClass::kV && !given_eta;
  st.reduce_flags = tiger && h.nonfinite_guard && !given_flags;
  st.rows = st.reduce_sums;
  st.caution = h.cautious;
  st.update = true;  // found_inf: the kernels skip on the device
  return st;
}
// tiger_stats: sums (every tensor) and flags, stage 2 writing the sums; nothing is updated.
inline Stages stats_stages() {
  Stages st;
  st.reduce_sums = st.reduce_flags = st.rows = true;
  return st;
}

struct KeyedLaunches {
  KernelKey key;
  std::vector<MtaArgs> launches;
};

struct CallPlan {
  WorkspaceLayout ws;
  std::vector<KeyedLaunches> reduce;
  std::vector<MtaArgs> rows;
  std::vector<KeyedLaunches> caution;  // the update's launches, counting ([note: cautious])
  std::vector<KeyedLaunches> update;
  std::vector<CounterArgs> counters;
  bool needs_workspace() const { return !reduce.empty() || !rows.empty() || !caution.empty(); }
};

// tensors, row0 and rows: the host plan's (StepPlan). steps: each tensor's counter (empty for
// tiger_stats); carried: each tensor's sumsq state (empty: none).
inline CallPlan plan_call(const std::vector<StepTensor>& tensors, const std::vector<int64_t>& row0, int64_t rows,
                          const std::vector<int64_t*>& steps, const std::vector<double*>& carried,
                          const Stages& st) {
  CallPlan plan;
  plan.ws = workspace_layout(tensors, row0, rows);
  plan.ws.caution = st.caution;
  const int32_t n = int32_t(tensors.size());
  std::vector<MtaTensor> mt;
  for (int32_t i = 0; i < n; ++i)
    mt.push_back(mta_tensor(tensors[size_t(i)], steps.empty() ? nullptr : steps[size_t(i)],
                            plan.ws.slot0[size_t(i)], row0[size_t(i)], i));
  auto packed = [&](const std::vector<int32_t>& order, int64_t (*blocks_of)(const StepTensor&)) {
    std::vector<MtaArgs> out;
    for (const Launch& l : plan_launches(order, [&](int32_t i) { return blocks_of(tensors[size_t(i)]); }))
      out.push_back(pack_args(l, mt));
    return out;
  };
  const auto groups = group_by<KernelKey>(n, [&](int32_t i) { return kernel_key(tensors[size_t(i)]); });
  if (st.reduce_sums || st.reduce_flags)
    for (const auto& [key, order] : groups) plan.reduce.push_back({key, packed(order, reduce_blocks)});
  if (st.rows) {
    std::vector<int32_t> all(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i) all[size_t(i)] = i;
    plan.rows = packed(all, row_blocks);
  }
  if (st.update) {
    for (const auto& [key, order] : groups) plan.update.push_back({key, packed(order, update_blocks)});
    if (st.caution) plan.caution = plan.update;
    std::vector<int64_t> sum_rows;
    for (int32_t i = 0; i < n && !carried.empty(); ++i)
      sum_rows.push_back((i + 1 < n ? row0[size_t(i) + 1] : rows) - row0[size_t(i)]);
    plan.counters = pack_counters(steps, carried, sum_rows);
  }
  return plan;
}

}  // namespace mta
}  // namespace tigercore
