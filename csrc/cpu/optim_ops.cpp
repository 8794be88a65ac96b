// optim_ops.cpp — CPU entry points of tigercore::lion_step_, tiger_step_, tiger_stats and
// sync_external_writes_. The host plan (csrc/host/step_plan.h) checks every input before anything
// is modified; then one parallel region of tasks (work_queue.h) runs the fused update over fixed
// chunks with the instruction-set variant chosen by isa.cpp. Tiger's per-tensor inputs come from
// [note: carried sums] or from the caller (eta, nonfinite). Reference: tigercore/reference/optim.py.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <numeric>
#include <utility>
#include <vector>

#include "host/step_plan.h"
#include "kernel_table.h"
#include "work_queue.h"

namespace tigercore {
namespace cpu {
namespace {

using host::StepArgs;
using host::StepPlan;

// [note: fixed chunking]
// Work is split into chunks of about kChunk elements that never cross a tensor boundary (and, for
// Tiger's E class, never cross a row). Chunk bounds depend only on the tensor shapes, so every
// reduction tree, and therefore every result, is the same for any number of threads.
constexpr int64_t kChunk = int64_t(1) << 13;

// [note: carried sums]
// Tiger needs sum(theta^2) of the pre-update working tensor (per row for E) before it updates it.
// The update loop of step t-1 holds theta_t in registers: it adds up the squares as it goes (in
// the lane pattern of [note: deterministic sum of squares] and the same chunks as a fresh pass, so
// the sums are bitwise those of a fresh pass) and writes them to the optimizer's `sumsq` state. At
// step t they are used as they are unless [note: external writes] marked them unknown (negative);
// then they are computed afresh. So Tiger reads theta once per step, like Lion.
//
// [note: the guard's second read]
// The guard must know that a tensor's whole gradient is finite before it writes any of it (an
// exact undo of a partial update would need a copy of m and theta). The check reads the gradient
// once more, in batches of about kBatch elements of consecutive tensors, checks then updates
// ([note: one region, dynamic tasks], work_queue.h), so that the second read comes from cache when
// a batch fits in it; a tensor larger than the cache pays one extra read of its gradient.
// Distributed callers compute the flags (and the step sizes) outside and pass them in.
constexpr int64_t kBatch = int64_t(1) << 20;

// Work below this many elements runs on the calling thread: a parallel region costs more.
constexpr int64_t kParallelWork = int64_t(1) << 16;

// With 8-bit momentum a chunk is also whole quantisation blocks ([note: 8-bit momentum]): kChunk is
// a multiple of kQ8Block, and E rows come in runs of lcm(row_len, kQ8Block) elements. An E row's sum
// of squares does not depend on the chunking, so the carried sums stay those of a fresh pass.
int64_t chunk_len(const StepTensor& t) {
  static_assert(kChunk % kQ8Block == 0, "chunks must be whole 8-bit momentum blocks");
  if (t.row_len > 0 && t.row_len != t.numel) {
    int64_t unit = t.row_len;
    if (t.momentum_dtype == DType::kCode8) unit = std::lcm(t.row_len, int64_t(kQ8Block));
    return std::max<int64_t>(1, kChunk / unit) * unit;
  }
  return kChunk;
}

// Calls f(begin, end) for the chunks of tensor t ([note: fixed chunking]), in order.
template <typename F>
void for_each_chunk(const StepTensor& t, const F& f) {
  if (t.numel <= 0) return;
  const int64_t len = chunk_len(t);
  for (int64_t b = 0; b < t.numel; b += len) f(b, std::min(t.numel, b + len));
}

const void* working_copy(const StepTensor& t) { return t.mode == Precision::kMaster ? t.aux : t.param; }
DType working_dtype(const StepTensor& t) { return t.mode == Precision::kMaster ? DType::kFloat32 : t.param_dtype; }

bool is_rows(const StepTensor& t) { return t.row_len != t.numel && t.row_len > 0; }

// Sums of squares of the working copies of the tensors with fresh[t] set, into sums[t] (one per
// row; sized by the caller). Chunk partials are added in chunk order.
void sum_squares_into(const std::vector<StepTensor>& tensors, const std::vector<char>& fresh,
                      std::vector<std::vector<double>>& sums) {
  const KernelTable& k = active_kernels();
  WorkQueue list;
  const int32_t batch = list.new_batch();
  for (size_t t = 0; t < tensors.size(); ++t)
    if (fresh[t]) for_each_chunk(tensors[t], [&](int64_t b, int64_t e) { list.add_update(batch, int32_t(t), b, e); });
  std::vector<double> partial(size_t(list.size()), 0.0);
  list.run(kParallelWork, [](const WorkTask&) {}, [&](int64_t i, const WorkTask& task) {
    const StepTensor& t = tensors[task.tensor];
    if (is_rows(t)) {
      for (int64_t r = task.begin / t.row_len; r < task.end / t.row_len; ++r)
        sums[task.tensor][r] = k.sum_squares(working_dtype(t), working_copy(t), r * t.row_len, (r + 1) * t.row_len);
    } else {
      partial[size_t(i)] = k.sum_squares(working_dtype(t), working_copy(t), task.begin, task.end);
    }
  });
  for (int64_t i = 0; i < list.size(); ++i) {
    const WorkTask& task = list.tasks()[size_t(i)];
    if (!is_rows(tensors[task.tensor])) sums[task.tensor][0] += partial[size_t(i)];
  }
}

bool found_inf_is_set(const std::optional<at::Tensor>& found_inf) {
  return found_inf.has_value() && found_inf->item<double>() != 0.0;
}

void advance_steps(at::TensorList steps) {
  for (const at::Tensor& s : steps) s.data_ptr<int64_t>()[0] += 1;
}

// The tasks of a step ([note: one region, dynamic tasks]). When some tensor needs a check before
// its update (the guard; cautious masking's count), batches of consecutive tensors of about kBatch
// elements, each with the checks of its tensors first (check_range[t]: tensor t's check tasks),
// so that the update's second read of the gradient comes from cache when a batch fits in it;
// otherwise one batch of updates.
template <typename NeedsCheck>
WorkQueue step_tasks(const std::vector<StepTensor>& ts, bool any_check, NeedsCheck&& needs_check,
                     std::vector<std::pair<int64_t, int64_t>>& check_range) {
  WorkQueue list;
  const size_t n = ts.size();
  check_range.assign(n, {0, 0});
  for (size_t first = 0, last = 0; first < n; first = last) {
    int64_t elems = 0;
    while (last < n && (elems < kBatch || !any_check)) elems += ts[last++].numel;
    const int32_t id = list.new_batch();
    for (size_t t = first; t < last; ++t) {
      check_range[t].first = list.size();
      if (any_check && needs_check(t))
        for_each_chunk(ts[t], [&](int64_t lo, int64_t hi) { list.add_check(id, int32_t(t), lo, hi); });
      check_range[t].second = list.size();
    }
    for (size_t t = first; t < last; ++t)
      for_each_chunk(ts[t], [&](int64_t lo, int64_t hi) { list.add_update(id, int32_t(t), lo, hi); });
  }
  return list;
}

// [note: cautious] on the CPU: each chunk's kept count is taken by a check task (a check may run
// twice, on two threads, so counts are stored per task, not accumulated), and the first update of
// a tensor adds its tensor's counts (integers: the same total on any thread) into its scale. The
// WorkQueue's release/acquire on finished checks orders the stores before the loads.
class CautionCounts {
 public:
  CautionCounts(const WorkQueue& list, std::vector<std::pair<int64_t, int64_t>> range)
      : list_(list), range_(std::move(range)), per_task_(new std::atomic<int64_t>[size_t(list.size())]),
        total_(new std::atomic<int64_t>[range_.size()]) {
    for (int64_t j = 0; j < list.size(); ++j) per_task_[j].store(0, std::memory_order_relaxed);
    for (size_t t = 0; t < range_.size(); ++t) total_[t].store(-1, std::memory_order_relaxed);
  }
  void count(const KernelTable& k, const StepCall& call, const StepTensor& t, const WorkTask& task) {
    per_task_[&task - list_.tasks().data()].store(k.caution_count(call, t, task.begin, task.end),
                                                   std::memory_order_relaxed);
  }
  // s of tensor i; every check task of its batch is done.
  double scale(int32_t i, int64_t numel) {
    int64_t kept = total_[i].load(std::memory_order_relaxed);
    if (kept < 0) {
      kept = 0;
      for (int64_t j = range_[size_t(i)].first; j < range_[size_t(i)].second; ++j)
        kept += per_task_[j].load(std::memory_order_relaxed);
      total_[i].store(kept, std::memory_order_relaxed);  // another thread may store the same value
    }
    return caution_scale_of(numel, kept);
  }

 private:
  const WorkQueue& list_;
  std::vector<std::pair<int64_t, int64_t>> range_;
  std::unique_ptr<std::atomic<int64_t>[]> per_task_;
  std::unique_ptr<std::atomic<int64_t>[]> total_;
};

void lion_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList aux,
                   at::TensorList steps, at::TensorList stamps, at::TensorList exp_avg_absmax, const at::Tensor& lr,
                   double beta1, double beta2,
                   double weight_decay, bool maximize, c10::string_view precision, int64_t seed,
                   at::IntArrayRef param_ids, const std::optional<at::Tensor>& grad_scale,
                   const std::optional<at::Tensor>& found_inf, bool compiled, at::IntArrayRef elem_offsets,
                   bool cautious) {
  const StepArgs in{params, grads, exp_avgs, aux, steps, stamps, {}, exp_avg_absmax, param_ids, lr, grad_scale,
                    found_inf, elem_offsets};
  StepPlan plan = host::begin_lion_step(in, beta1, beta2, weight_decay, maximize, precision, seed, compiled,
                                        at::kCPU, /*read_steps=*/true, cautious);
  if (found_inf_is_set(found_inf)) return host::record_stamps(params, stamps);
  const KernelTable& k = active_kernels();
  std::vector<std::pair<int64_t, int64_t>> checks;  // checks only for cautious masking's counts
  const WorkQueue list = step_tasks(plan.tensors, cautious, [](size_t) { return true; }, checks);
  CautionCounts counts(list, std::move(checks));
  list.run(kParallelWork,
      [&](const WorkTask& task) { counts.count(k, plan.call, plan.tensors[task.tensor], task); },
      [&](int64_t, const WorkTask& task) {
        StepTensor t = plan.tensors[task.tensor];
        if (cautious) t.caution_scale = counts.scale(task.tensor, t.numel);
        k.sign_step(plan.call, t, task.begin, task.end, nullptr);
      });
  advance_steps(steps);
  host::bump_versions(in, std::vector<char>(params.size(), 1));
  host::record_stamps(params, stamps);
}

// Tiger's step sizes: from `eta` (the caller's), else from the carried sums where they are known,
// else from a fresh pass. Fills t.eta (K, V) or eta_rows (E, one per row) for tensors that move.
void tiger_step_sizes(StepPlan& plan, at::TensorList sumsq, const std::optional<at::Tensor>& eta,
                      std::vector<std::vector<double>>& eta_rows) {
  const StepHyper& h = plan.call.hyper;
  const size_t n = plan.tensors.size();
  eta_rows.assign(n, {});
  if (h.tiger_class == TigerClass::kV) {
    for (StepTensor& t : plan.tensors) t.eta = 0.5 * plan.call.lr;
    return;
  }
  if (eta.has_value()) {
    const double* e = eta->data_ptr<double>();
    for (size_t i = 0; i < n; ++i) {
      StepTensor& t = plan.tensors[i];
      if (is_rows(t) || h.tiger_class == TigerClass::kE) t.eta_rows = e + plan.row0[i];
      t.eta = e[plan.row0[i]];
    }
    return;
  }
  std::vector<std::vector<double>> sums(n);
  std::vector<char> fresh(n, 0);
  bool any_fresh = false;
  for (size_t i = 0; i < n; ++i) {
    const StepTensor& t = plan.tensors[i];
    const int64_t rows = i + 1 < n ? plan.row0[i + 1] - plan.row0[i] : plan.rows - plan.row0[i];
    if (!t.update || t.numel == 0) continue;
    const double* carried = sumsq.empty() ? nullptr : sumsq[i].data_ptr<double>();
    if (carried != nullptr && std::all_of(carried, carried + rows, [](double v) { return v >= 0.0; })) {
      sums[i].assign(carried, carried + rows);
    } else {
      sums[i].assign(size_t(rows), 0.0);
      fresh[i] = 1;
      any_fresh = true;
    }
  }
  if (any_fresh) sum_squares_into(plan.tensors, fresh, sums);
  for (size_t i = 0; i < n; ++i) {
    StepTensor& t = plan.tensors[i];
    if (!t.update || t.numel == 0) continue;
    const int64_t count = is_rows(t) ? t.row_len : t.numel;
    for (double& v : sums[i]) v = tiger_eta_from_sumsq(plan.call.lr, v, count, h.rms_floor);
    eta_rows[i] = std::move(sums[i]);
    t.eta = eta_rows[i][0];
    if (is_rows(t)) t.eta_rows = eta_rows[i].data();
  }
}

void tiger_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList aux,
                    at::TensorList steps, at::TensorList stamps, at::TensorList sumsq, at::TensorList exp_avg_absmax,
                    const at::Tensor& lr,
                    double beta, double weight_decay, int64_t grad_accum_steps, c10::string_view tiger_class,
                    double shrink_ratio, double shrink_center, bool nonfinite_guard, double rms_floor, bool maximize,
                    c10::string_view precision, int64_t seed, at::IntArrayRef param_ids,
                    const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
                    bool compiled, const std::optional<at::Tensor>& eta, const std::optional<at::Tensor>& nonfinite,
                    at::IntArrayRef elem_offsets, bool cautious) {
  const StepArgs in{params, grads, exp_avgs, aux, steps, stamps, sumsq, exp_avg_absmax, param_ids, lr, grad_scale,
                    found_inf, elem_offsets};
  StepPlan plan = host::begin_tiger_step(in, beta, weight_decay, grad_accum_steps, tiger_class, shrink_ratio,
                                         shrink_center, nonfinite_guard, rms_floor, maximize, precision, seed,
                                         compiled, eta, nonfinite, at::kCPU, /*read_steps=*/true, cautious);
  const size_t n = plan.tensors.size();
  const at::TensorList carried = host::carried_sums(in, plan.call.hyper);
  if (found_inf_is_set(found_inf)) return host::record_stamps(params, stamps);

  for (StepTensor& t : plan.tensors) t.update = tiger_is_update_step(t.step, grad_accum_steps);
  std::vector<std::vector<double>> eta_rows;
  tiger_step_sizes(plan, carried, eta, eta_rows);  // for tensors the guard may still stop: unused
  const bool given_flags = nonfinite.has_value();
  const bool check = nonfinite_guard && !given_flags;
  if (nonfinite_guard && given_flags)
    for (size_t i = 0; i < n; ++i) plan.tensors[i].shrink = nonfinite->data_ptr<bool>()[i];

  // Check tasks: the guard's (every tensor) and cautious masking's counts (tensors that move).
  const auto counted = [&](size_t t) { return cautious && plan.tensors[t].update; };
  std::vector<std::pair<int64_t, int64_t>> checks;
  const WorkQueue list = step_tasks(plan.tensors, check || cautious, [&](size_t t) { return check || counted(t); },
                                    checks);
  CautionCounts counts(list, std::move(checks));
  const KernelTable& k = active_kernels();
  std::unique_ptr<std::atomic<uint8_t>[]> fired(new std::atomic<uint8_t>[n]);
  for (size_t i = 0; i < n; ++i) fired[i].store(plan.tensors[i].shrink ? 1 : 0, std::memory_order_relaxed);
  const bool carry = !carried.empty();
  std::vector<double> partial(size_t(list.size()), 0.0);
  list.run(kParallelWork,
      [&](const WorkTask& task) {
        const StepTensor& t = plan.tensors[task.tensor];
        if (check &&
            !k.all_finite(t.param_dtype, t.grad, task.begin, task.end, plan.call.has_grad_scale, plan.call.grad_scale))
          fired[task.tensor].store(1, std::memory_order_relaxed);
        if (counted(size_t(task.tensor))) counts.count(k, plan.call, t, task);
      },
      [&](int64_t i, const WorkTask& task) {
        StepTensor t = plan.tensors[task.tensor];  // all checks of its batch are done (acquire)
        t.shrink = fired[task.tensor].load(std::memory_order_relaxed) != 0;
        if (counted(size_t(task.tensor)) && !t.shrink) t.caution_scale = counts.scale(task.tensor, t.numel);
        double* rows = carry && is_rows(t) && (t.update || t.shrink) ? carried[task.tensor].data_ptr<double>() : nullptr;
        partial[size_t(i)] = k.sign_step(plan.call, t, task.begin, task.end, rows);
      });

  std::vector<char> written(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const bool shrink = fired[i].load(std::memory_order_relaxed) != 0;
    written[i] = plan.tensors[i].numel > 0 && (plan.tensors[i].update || shrink);
  }
  if (carry) {  // K: chunk partials in chunk order, as sum_squares_into adds them
    std::vector<double> total(n, 0.0);
    for (int64_t i = 0; i < list.size(); ++i) {
      const WorkTask& task = list.tasks()[size_t(i)];
      if (!task.check) total[task.tensor] += partial[size_t(i)];
    }
    for (size_t i = 0; i < n; ++i)
      if (written[i] && !is_rows(plan.tensors[i])) carried[i].data_ptr<double>()[0] = total[i];
  }
  advance_steps(steps);
  host::bump_versions(in, written);
  host::record_stamps(params, stamps);
}

std::tuple<at::Tensor, at::Tensor> tiger_stats_cpu(at::TensorList params, at::TensorList grads, at::TensorList aux,
                                                   at::TensorList sumsq, c10::string_view tiger_class,
                                                   c10::string_view precision,
                                                   const std::optional<at::Tensor>& grad_scale) {
  const StepPlan plan = host::plan_tiger_stats(params, grads, aux, sumsq, tiger_class, precision, grad_scale,
                                               at::kCPU);
  const std::vector<StepTensor>& tensors = plan.tensors;
  const size_t n = tensors.size();
  std::vector<int64_t> row0(plan.row0);
  row0.push_back(plan.rows);
  at::Tensor out_sums = at::zeros({row0[n]}, at::dtype(at::kDouble));
  at::Tensor out_flags = at::zeros({int64_t(n)}, at::dtype(at::kBool));
  std::vector<std::vector<double>> sums(n);
  std::vector<char> fresh(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const int64_t rows = row0[i + 1] - row0[i];
    const double* c = sumsq.empty() ? nullptr : sumsq[i].data_ptr<double>();
    if (c != nullptr && std::all_of(c, c + rows, [](double v) { return v >= 0.0; })) {
      sums[i].assign(c, c + rows);
    } else {
      sums[i].assign(size_t(rows), 0.0);
      fresh[i] = tensors[i].numel > 0;
    }
  }
  sum_squares_into(tensors, fresh, sums);
  double* s = out_sums.data_ptr<double>();
  for (size_t i = 0; i < n; ++i) std::copy(sums[i].begin(), sums[i].end(), s + row0[i]);
  const bool scaled = grad_scale.has_value();
  const double scale = scaled ? grad_scale->item<double>() : 1.0;
  const KernelTable& k = active_kernels();
  std::unique_ptr<std::atomic<uint8_t>[]> fired(new std::atomic<uint8_t>[n]);
  for (size_t i = 0; i < n; ++i) fired[i].store(0, std::memory_order_relaxed);
  WorkQueue list;
  const int32_t batch = list.new_batch();
  for (size_t t = 0; t < n; ++t) for_each_chunk(tensors[t], [&](int64_t b, int64_t e) { list.add_update(batch, int32_t(t), b, e); });
  list.run(kParallelWork, [](const WorkTask&) {}, [&](int64_t, const WorkTask& task) {
    const StepTensor& t = tensors[task.tensor];
    if (!k.all_finite(t.param_dtype, t.grad, task.begin, task.end, scaled, scale))
      fired[task.tensor].store(1, std::memory_order_relaxed);
  });
  bool* f = out_flags.data_ptr<bool>();
  for (size_t i = 0; i < n; ++i) f[i] = fired[i].load(std::memory_order_relaxed) != 0;
  return {out_sums, out_flags};
}

void sync_external_writes_op(at::TensorList params, at::TensorList aux, at::TensorList stamps, at::TensorList sumsq,
                             c10::string_view precision, bool compiled) {
  const Precision mode = host::parse_precision(precision);
  host::check_aux("sync_external_writes_", params, aux, mode);
  host::check_stamps("sync_external_writes_", stamps, params);
  TORCH_CHECK(sumsq.empty() || sumsq.size() == params.size(),
              "tigercore::sync_external_writes_: sumsq must be empty or have one tensor per param");
  host::sync_external_writes(params, aux, stamps, sumsq, mode, compiled);
}

}  // namespace

TORCH_LIBRARY_IMPL(tigercore, CPU, m) {
  m.impl("lion_step_", &lion_step_cpu);
  m.impl("tiger_step_", &tiger_step_cpu);
  m.impl("tiger_stats", &tiger_stats_cpu);
  m.impl("sync_external_writes_", &sync_external_writes_op);
}

// Device-independent (ATen ops only): the same kernel serves every device.
TORCH_LIBRARY_IMPL(tigercore, CUDA, m) { m.impl("sync_external_writes_", &sync_external_writes_op); }

}  // namespace cpu
}  // namespace tigercore
