// optim_ops.cpp — CPU entry points of tigercore::lion_step_ and tigercore::tiger_step_.
// Checks every input before anything is modified, then runs the fused update over fixed chunks
// with at::parallel_for, using the instruction-set variant chosen by isa.cpp. Tiger's per-tensor
// inputs (non-finite guard, RMS per tensor / per row) come from [note: Tiger without an extra
// pass]. Reference: tigercore/reference/optim.py.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <vector>

#include "kernel_table.h"
#include "step_tasks.h"
#include "../step_common.h"

namespace tigercore {
namespace cpu {
namespace {

// [note: fixed chunking]
// Work is split into chunks of about kChunk elements that never cross a tensor boundary (and, for
// Tiger's E class, never cross a row). Chunk bounds depend only on the tensor shapes, so every
// reduction tree, and therefore every result, is the same for any number of threads.
constexpr int64_t kChunk = int64_t(1) << 13;

// [note: Tiger without an extra pass]
// Tiger needs, before it updates a tensor, (a) whether its gradient is finite (the guard) and
// (b) sum(theta^2) of the pre-update tensor (per row for E). Neither may cost a full extra pass:
//  (b) The update loop of step t-1 holds theta_t in registers: it adds up the squares as it goes
//      (in the lane pattern of [note: deterministic sum of squares] and the same chunks as a fresh
//      pass, so the sums are bitwise the same) and we keep them in the optimizer state (`rms_cache`: row sums, then the version counter
//      and data pointer of the tensor they describe). At step t the sums are trusted only if that
//      tensor's version counter and data pointer are unchanged, i.e. nothing wrote to it through
//      autograd-visible in-place ops since; otherwise they are recomputed. (Writes through
//      `.data` bypass the version counter: call Tiger.invalidate_rms_cache() after them.)
//  (c) The guard's check reads the gradient once more, in batches of about kBatch elements of
//      consecutive tensors, check then update ([note: one region, dynamic tasks], step_tasks.h),
//      so that the second read comes from cache when a batch fits in it. A tensor is never
//      split: its whole gradient must be known finite before any of it is written, and exact
//      undo of a partial update would need a copy of m and theta. So a tensor larger than the
//      cache pays one extra read of its gradient from memory: +4 B on Lion's 20 B per element
//      (fp32), +2 B on 22 B (bf16 + fp32 master). On this project's 2-core EPYC (1 MB L2 per
//      core) that is every GPT-2 weight matrix; measured in the issue-3 closing note.
constexpr int64_t kBatch = int64_t(1) << 20;

// Work below this many elements runs on the calling thread: a parallel region costs more.
constexpr int64_t kParallelWork = int64_t(1) << 16;

int64_t chunk_len(const SignStepTensor& t, const SignStepCall& c) {
  if (c.algo == Algo::kTiger && c.tiger_class == TigerClass::kE && t.row_len > 0)
    return std::max<int64_t>(1, kChunk / t.row_len) * t.row_len;
  return kChunk;
}

// Calls f(begin, end) for the chunks of tensor t ([note: fixed chunking]), in order.
template <typename F>
void for_each_chunk(const SignStepCall& c, const SignStepTensor& t, const F& f) {
  const int64_t len = chunk_len(t, c);
  for (int64_t b = 0; b < t.numel; b += len) f(b, std::min(t.numel, b + len));
}

const void* rms_source(const SignStepCall& c, const SignStepTensor& t) {
  return c.precision == Precision::kMaster ? t.aux : t.param;
}
DType rms_dtype(const SignStepCall& c) {
  return c.precision == Precision::kMaster ? DType::kFloat32 : c.param_dtype;
}

// Sums of squares of the working copies of the tensors with fresh[t] set: one per tensor (K) or
// per row (E), written into sums[t] (sized by the caller). Chunk partials are added in chunk order.
void sum_squares_into(const std::vector<SignStepCall>& calls, const std::vector<SignStepTensor>& tensors,
                      const std::vector<char>& fresh, std::vector<std::vector<double>>& sums) {
  const KernelTable& k = active_kernels();
  StepTaskList list;
  const int32_t batch = list.new_batch();
  for (size_t t = 0; t < tensors.size(); ++t)
    if (fresh[t]) for_each_chunk(calls[t], tensors[t], [&](int64_t b, int64_t e) { list.add_update(batch, int32_t(t), b, e); });
  std::vector<double> partial(size_t(list.size()), 0.0);
  list.run(kParallelWork, [](const StepTask&) {}, [&](int64_t i, const StepTask& task) {
    const SignStepCall& c = calls[task.tensor];
    const SignStepTensor& t = tensors[task.tensor];
    if (c.tiger_class == TigerClass::kE) {
      for (int64_t r = task.begin / t.row_len; r < task.end / t.row_len; ++r)
        sums[task.tensor][r] = k.sum_squares(rms_dtype(c), rms_source(c, t), r * t.row_len, (r + 1) * t.row_len);
    } else {
      partial[i] = k.sum_squares(rms_dtype(c), rms_source(c, t), task.begin, task.end);
    }
  });
  for (int64_t i = 0; i < list.size(); ++i) {
    const StepTask& task = list.tasks()[size_t(i)];
    if (calls[task.tensor].tiger_class != TigerClass::kE) sums[task.tensor][0] += partial[i];
  }
}

// ---- the carried sums of squares ------------------------------------------------------------
int64_t rows_of(const SignStepTensor& t) { return t.row_len > 0 ? t.numel / t.row_len : 0; }

const at::Tensor& rms_tensor(const StepInputs& in, const SignStepCall& c, size_t i) {
  return c.precision == Precision::kMaster ? in.aux[i] : in.params[i];
}

bool cache_valid(const at::Tensor& cache, const at::Tensor& src, int64_t rows) {
  if (!cache.defined() || cache.numel() != rows + 2) return false;
  const double* d = cache.data_ptr<double>();
  return d[rows] == double(src._version()) &&
         d[rows + 1] == double(reinterpret_cast<uintptr_t>(src.data_ptr()));
}

void store_cache(const at::Tensor& cache, const at::Tensor& src, const std::vector<double>& sums) {
  const int64_t rows = int64_t(sums.size());
  if (!cache.defined() || cache.numel() != rows + 2) return;
  double* d = cache.data_ptr<double>();
  std::copy(sums.begin(), sums.end(), d);
  d[rows] = double(src._version());
  d[rows + 1] = double(reinterpret_cast<uintptr_t>(src.data_ptr()));
}

void check_rms_cache(at::TensorList cache, size_t n) {
  TORCH_CHECK(cache.empty() || cache.size() == n, "tigercore::tiger_step_: rms_cache must be empty or have one "
              "tensor per param, got ", cache.size(), " for ", n, " params");
  for (size_t i = 0; i < cache.size(); ++i)
    TORCH_CHECK(cache[i].scalar_type() == at::kDouble && cache[i].device().is_cpu() && cache[i].is_contiguous(),
                "tigercore::tiger_step_: rms_cache[", i, "] must be a contiguous float64 CPU tensor");
}

void lion_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                   at::TensorList aux, at::TensorList steps, double lr, double beta1, double beta2,
                   double weight_decay, bool maximize, c10::string_view precision, int64_t seed,
                   at::IntArrayRef param_ids, const std::optional<at::Tensor>& grad_scale,
                   const std::optional<at::Tensor>& found_inf) {
  StepInputs in{params, grads, exp_avgs, aux, steps, param_ids, grad_scale, found_inf};
  const Precision mode = parse_precision(precision);
  check_step_inputs("lion_step_", in, mode, at::kCPU);
  check_lion_hyper(lr, beta1, beta2, weight_decay);
  if (found_inf_is_set_cpu(found_inf)) return;

  SignStepCall base{};
  base.algo = Algo::kLion;
  base.maximize = maximize;
  fill_grad_scale_cpu(base, grad_scale);
  base.lr = lr;
  base.weight_decay = weight_decay;
  base.beta1 = beta1;
  base.beta2 = beta2;
  base.seed = uint32_t(seed);
  std::vector<SignStepCall> calls;
  std::vector<SignStepTensor> tensors;
  describe_tensors(in, mode, base, calls, tensors);
  for (auto& t : tensors) t.eta = lr;
  const KernelTable& k = active_kernels();
  StepTaskList list;  // [note: one region, dynamic tasks]: one batch, no checks
  const int32_t batch = list.new_batch();
  for (size_t t = 0; t < tensors.size(); ++t)
    for_each_chunk(calls[t], tensors[t], [&](int64_t b, int64_t e) { list.add_update(batch, int32_t(t), b, e); });
  list.run(kParallelWork, [](const StepTask&) {}, [&](int64_t, const StepTask& task) {
    k.sign_step(calls[task.tensor], tensors[task.tensor], task.begin, task.end, nullptr);
  });
  for (const at::Tensor& s : steps) s.data_ptr<int64_t>()[0] += 1;
  const std::vector<char> all(tensors.size(), 1);
  bump_versions(in, /*params_written=*/all);
}

void tiger_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                    at::TensorList aux, at::TensorList steps, at::TensorList rms_cache, double lr,
                    double beta, double weight_decay, int64_t grad_accum_steps,
                    c10::string_view tiger_class, double shrink_ratio, double shrink_center,
                    bool nonfinite_guard, double rms_floor, bool maximize, c10::string_view precision,
                    int64_t seed, at::IntArrayRef param_ids, const std::optional<at::Tensor>& grad_scale,
                    const std::optional<at::Tensor>& found_inf) {
  StepInputs in{params, grads, exp_avgs, aux, steps, param_ids, grad_scale, found_inf};
  const Precision mode = parse_precision(precision);
  const TigerClass cls = parse_tiger_class(tiger_class);
  check_step_inputs("tiger_step_", in, mode, at::kCPU);
  check_tiger_hyper(lr, beta, weight_decay, grad_accum_steps, shrink_ratio, rms_floor);
  check_rms_cache(rms_cache, params.size());
  if (found_inf_is_set_cpu(found_inf)) return;

  SignStepCall base{};
  base.algo = Algo::kTiger;
  base.maximize = maximize;
  fill_grad_scale_cpu(base, grad_scale);
  base.lr = lr;
  base.weight_decay = cls == TigerClass::kV ? 0.0 : weight_decay;
  base.beta = beta;
  base.grad_accum_steps = grad_accum_steps;
  base.tiger_class = cls;
  base.shrink_ratio = shrink_ratio;
  base.shrink_center = shrink_center;
  base.rms_floor = rms_floor;
  base.nonfinite_guard = nonfinite_guard;
  base.seed = uint32_t(seed);
  std::vector<SignStepCall> calls;
  std::vector<SignStepTensor> tensors;
  describe_tensors(in, mode, base, calls, tensors);
  const size_t n = tensors.size();
  const bool needs_rms = cls != TigerClass::kV;
  const bool carry = needs_rms && !rms_cache.empty();  // sums of the new values are carried
  for (size_t i = 0; i < n; ++i) tensors[i].update = tiger_is_update_step(tensors[i].step, grad_accum_steps);

  // RMS inputs: the carried sums while valid, else a fresh pass (first step, or after a write
  // from outside; [note: Tiger without an extra pass]). Which tensors the guard will stop is not
  // known yet; their step sizes are computed and not used.
  std::vector<std::vector<double>> sums(n), new_sums(n);
  std::vector<char> fresh(n, 0);
  bool any_fresh = false;
  for (size_t i = 0; i < n && needs_rms; ++i) {
    const int64_t rows = rows_of(tensors[i]);
    if (carry) new_sums[i].assign(size_t(rows), 0.0);
    if (!tensors[i].update) continue;
    const at::Tensor& src = rms_tensor(in, calls[i], i);
    if (carry && cache_valid(rms_cache[i], src, rows)) {
      const double* d = rms_cache[i].data_ptr<double>();
      sums[i].assign(d, d + rows);
    } else {
      sums[i].assign(size_t(rows), 0.0);
      fresh[i] = 1;
      any_fresh = true;
    }
  }
  if (any_fresh) sum_squares_into(calls, tensors, fresh, sums);
  for (size_t i = 0; i < n; ++i) {
    SignStepTensor& t = tensors[i];
    if (!t.update) continue;
    if (cls == TigerClass::kV) {
      t.eta = 0.5 * lr;
    } else if (cls == TigerClass::kK) {
      t.eta = tiger_eta_from_sumsq(lr, sums[i].empty() ? 0.0 : sums[i][0], t.numel, rms_floor);
    } else {
      for (double& v : sums[i]) v = tiger_eta_from_sumsq(lr, v, t.row_len, rms_floor);
      t.eta_rows = sums[i].data();
    }
  }

  // The tasks ([note: one region, dynamic tasks]): with the guard, batches of consecutive tensors
  // of about kBatch elements, checks first; without it, one batch of updates.
  StepTaskList list;
  std::vector<std::pair<size_t, size_t>> batches;  // [first, last) tensors
  for (size_t first = 0, last = 0; first < n; first = last) {
    int64_t elems = 0;
    while (last < n && (elems < kBatch || !nonfinite_guard)) elems += tensors[last++].numel;
    batches.push_back({first, last});
  }
  for (size_t b = 0; b < batches.size(); ++b) {
    const int32_t id = list.new_batch();
    for (size_t t = batches[b].first; t < batches[b].second && nonfinite_guard; ++t)
      for_each_chunk(calls[t], tensors[t], [&](int64_t lo, int64_t hi) { list.add_check(id, int32_t(t), lo, hi); });
    for (size_t t = batches[b].first; t < batches[b].second; ++t)
      for_each_chunk(calls[t], tensors[t], [&](int64_t lo, int64_t hi) { list.add_update(id, int32_t(t), lo, hi); });
  }
  const KernelTable& k = active_kernels();
  std::unique_ptr<std::atomic<uint8_t>[]> nonfinite(new std::atomic<uint8_t>[n]);
  for (size_t i = 0; i < n; ++i) nonfinite[i].store(0, std::memory_order_relaxed);
  std::vector<double> partial(size_t(list.size()), 0.0);
  list.run(kParallelWork,
      [&](const StepTask& task) {
        const SignStepCall& c = calls[task.tensor];
        if (!k.all_finite(c.param_dtype, tensors[task.tensor].grad, task.begin, task.end, c.has_grad_scale,
                          c.grad_scale))
          nonfinite[task.tensor].store(1, std::memory_order_relaxed);
      },
      [&](int64_t i, const StepTask& task) {
        SignStepTensor t = tensors[task.tensor];  // all checks of its batch are done (acquire)
        t.shrink = nonfinite[task.tensor].load(std::memory_order_relaxed) != 0;
        t.want_sumsq = carry && (t.update || t.shrink);
        const bool rows = t.want_sumsq && cls == TigerClass::kE;
        partial[size_t(i)] = k.sign_step(calls[task.tensor], t, task.begin, task.end,
                                         rows ? new_sums[task.tensor].data() : nullptr);
      });

  std::vector<char> written(n, 0);
  for (size_t i = 0; i < n; ++i) {
    tensors[i].shrink = nonfinite[i].load(std::memory_order_relaxed) != 0;
    written[i] = tensors[i].update || tensors[i].shrink;
  }
  if (carry && cls == TigerClass::kK)  // chunk partials in chunk order, as sum_squares_into adds them
    for (int64_t i = 0; i < list.size(); ++i) {
      const StepTask& task = list.tasks()[size_t(i)];
      if (!task.check) new_sums[task.tensor][0] += partial[size_t(i)];
    }
  for (const at::Tensor& s : steps) s.data_ptr<int64_t>()[0] += 1;
  bump_versions(in, written);
  for (size_t i = 0; i < n && carry; ++i)
    if (written[i]) store_cache(rms_cache[i], rms_tensor(in, calls[i], i), new_sums[i]);
}

}  // namespace

TORCH_LIBRARY_IMPL(tigercore, CPU, m) {
  m.impl("lion_step_", &lion_step_cpu);
  m.impl("tiger_step_", &tiger_step_cpu);
}

}  // namespace cpu
}  // namespace tigercore
