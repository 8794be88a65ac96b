// work_queue.h — the one CPU work scheduler of every op: an ordered list of tasks handed out from a
// shared counter inside one parallel region (WorkQueue), with an optional check-before-update rule
// (Tiger's guard) kept without barriers, and parallel_ranges() for plain chunked loops (the
// Analytic-DPM ops). Results never depend on which thread runs a task: every task's output is
// stored per task and combined in task order (the references have no threads at all).
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <memory>
#include <vector>

namespace tigercore {
namespace cpu {

// [note: one region, dynamic tasks]
// A call is a list of tasks in a fixed order (for a step: per batch of tensors, the guard's check
// tasks, read-only "is this chunk of a gradient finite?", then the update tasks of the same
// chunks). All threads of ONE parallel region take tasks in list order from a shared counter, so
//  - a thread whose core is busy (data-loader workers, a shared machine) takes fewer tasks instead
//    of holding up the call: there are no static halves and no barriers between batches
//    (bench/bench_busy_core.py measures a step with one core taken);
//  - the update of a batch may start only when all of its checks are done. Tasks are handed out
//    in order, so when a thread takes the batch's first update task every check has been taken; a
//    check still running elsewhere is simply run again by this thread (checks are idempotent and
//    read-only), so nobody ever waits for another thread;
//  - the check and update of a batch are close in time, so the second read of the gradient comes
//    from cache for every batch that fits in it.
// What a task computes depends only on the task, and partial sums are stored per task and added
// up in task order afterwards, so results are the same for any thread count and interleaving.
struct WorkTask {
  int32_t tensor;
  int32_t batch;
  int64_t begin, end;  // elements of the tensor
  bool check;          // guard check (else: update)
};

class WorkQueue {
 public:
  // A new batch. Its checks must be added in one contiguous run, before any of its updates.
  int32_t new_batch() {
    check_start_.push_back(0);
    check_end_.push_back(0);
    return int32_t(check_start_.size()) - 1;
  }
  void add_check(int32_t batch, int32_t tensor, int64_t b, int64_t e) {
    if (check_end_[size_t(batch)] == 0) check_start_[size_t(batch)] = size();
    check_end_[size_t(batch)] = size() + 1;
    tasks_.push_back({tensor, batch, b, e, true});
  }
  void add_update(int32_t batch, int32_t tensor, int64_t b, int64_t e) {
    tasks_.push_back({tensor, batch, b, e, false});
    elements_ += e - b;
  }
  const std::vector<WorkTask>& tasks() const { return tasks_; }
  int64_t size() const { return int64_t(tasks_.size()); }

  // Runs check(task) for every check task and update(index, task) for every update task, the
  // latter only after all checks of its batch have completed (on some thread). A thread takes up
  // to grab_updates consecutive update tasks at a time (long streams for the prefetchers).
  // Below parallel_threshold elements of update work everything runs on the calling thread.
  template <typename Check, typename Update>
  void run(int64_t parallel_threshold, const Check& check, const Update& update, int64_t grab_updates = 16) const {
    const int64_t n = size();
    if (n == 0) return;
    std::vector<int64_t> run_end(static_cast<size_t>(n));  // end of the run of same-kind, same-batch tasks
    for (int64_t i = n - 1; i >= 0; --i) {
      const bool same = i + 1 < n && tasks_[size_t(i + 1)].batch == tasks_[size_t(i)].batch &&
                        tasks_[size_t(i + 1)].check == tasks_[size_t(i)].check;
      run_end[size_t(i)] = same ? run_end[size_t(i + 1)] : i + 1;
    }
    std::unique_ptr<std::atomic<uint8_t>[]> done(new std::atomic<uint8_t>[size_t(n)]);
    for (int64_t i = 0; i < n; ++i) done[i].store(0, std::memory_order_relaxed);
    std::atomic<int64_t> next{0};
    // Takes the next run of tasks [i, end): up to grab_updates consecutive update tasks or
    // kGrabChecks check tasks (a check another thread finds still running is redone, so those runs
    // stay short), never past the end of the run of its kind and batch. False when no task is left.
    const auto grab = [&](int64_t& i, int64_t& end) {
      int64_t b = next.load(std::memory_order_relaxed), e;
      do {
        if (b >= n) return false;
        e = std::min(run_end[size_t(b)], b + (tasks_[size_t(b)].check ? kGrabChecks : grab_updates));
      } while (!next.compare_exchange_weak(b, e, std::memory_order_relaxed));
      i = b;
      end = e;
      return true;
    };
    auto worker = [&] {
      int32_t verified = -1;  // the batch whose checks this thread has seen complete
      int64_t i = 0, mine_end = 0;
      for (;;) {
        if (i >= mine_end && !grab(i, mine_end)) break;
        const int64_t cur = i++;
        const WorkTask& t = tasks_[size_t(cur)];
        if (t.check) {
          check(t);
          done[cur].store(1, std::memory_order_release);
          continue;
        }
        if (t.batch != verified) {
          for (int64_t j = check_start_[size_t(t.batch)]; j < check_end_[size_t(t.batch)]; ++j) {
            if (done[j].load(std::memory_order_acquire)) continue;
            check(tasks_[size_t(j)]);  // still running on another thread: do it here as well
            done[j].store(1, std::memory_order_release);
          }
          verified = t.batch;
        }
        update(cur, t);
      }
    };
    const int64_t threads = std::min<int64_t>(at::get_num_threads(), n);
    if (threads <= 1 || elements_ < parallel_threshold || at::in_parallel_region()) {
      worker();
    } else {
      at::parallel_for(0, threads, 1, [&](int64_t, int64_t) { worker(); });
    }
  }

 private:
  static constexpr int64_t kGrabChecks = 4;
  std::vector<WorkTask> tasks_;
  std::vector<int64_t> check_start_, check_end_;  // per batch: its check tasks [start, end)
  int64_t elements_ = 0;
};

// body(b, e) over [0, n) in chunks of `chunk` items, each handed out alone from the shared
// counter ([note: one region, dynamic tasks]); inline below `work` < parallel_threshold units of
// work (elements, products, candidates), since a parallel region costs more than small work.
template <typename Body>
void parallel_ranges(int64_t n, int64_t chunk, int64_t work, int64_t parallel_threshold, const Body& body) {
  if (n <= 0) return;
  WorkQueue queue;
  const int32_t batch = queue.new_batch();
  for (int64_t b = 0; b < n; b += chunk) queue.add_update(batch, 0, b, std::min(n, b + chunk));
  queue.run(work < parallel_threshold ? std::numeric_limits<int64_t>::max() : 0, [](const WorkTask&) {},
            [&](int64_t, const WorkTask& t) { body(t.begin, t.end); }, /*grab_updates=*/1);
}

}  // namespace cpu
}  // namespace tigercore
