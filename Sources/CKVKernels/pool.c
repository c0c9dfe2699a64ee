// The threads the engine's kernels run on: helpers that spin briefly for the next parallel
// region before they sleep, so that the hundreds of short regions of one decoded token (a
// matrix-vector product per projection) start in well under a microsecond, where waking a
// sleeping thread through the kernel costs tens.
//
// Spinning is on PAUSE only for ~50 µs; then a thread that waits gives its core away
// (sched_yield) between looks, so that on cores shared with other work (OpenBLAS's threads, other
// processes) a waiting thread does not hold the core the thread it waits for needs. Spinning on
// PAUSE alone for 400 µs after every region, the caller waiting for a descheduled helper and
// the helpers took half the CPU time of a 512-token prefill under load (perf).
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "kvkernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
static inline void relax(void) { _mm_pause(); }
#else
static inline void relax(void) { sched_yield(); }
#endif

// PAUSE takes ~25 ns on Zen 4: 2^11 of them are ~50 µs; then up to 2^8 yields before sleeping.
enum { MAX_HELPERS = 255, PAUSES = 1 << 11, YIELDS = 1 << 8 };
_Static_assert(MAX_HELPERS + 1 <= 0xffff, "a region's workers fit the state's low 16 bits");

// One look of a waiting thread: PAUSE for the first `PAUSES` looks, then sched_yield.
static inline void wait_a_little(int look) {
  if (look < PAUSES)
    relax();
  else
    sched_yield();
}

static pthread_mutex_t region_lock = PTHREAD_MUTEX_INITIALIZER;  // one region at a time
static pthread_mutex_t sleep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
// The region's number and how many workers it has, in one word (number << 16 | workers): a
// helper learns whether it takes part from the load that tells it a region began. Read from
// a field of its own, a helper left out of a region could read it while the next region
// writes it, and a late one could take part in that next region twice.
static atomic_ulong region_state;
static atomic_int remaining;
static int sleepers;  // under sleep_lock
static int helpers;   // under region_lock
// The region's job, written before `region_state` is released and read after it is acquired,
// by the region's workers only (the next region waits for them before it writes).
static kvk_task job_task;
static void *job_context;
static _Thread_local int inside_region;
// The region state each helper was created in (it takes part from the next one on): read by
// the helper itself, it could already be the region it was created for, which it would miss.
static unsigned long created_in[MAX_HELPERS + 1];

static void *helper_main(void *arg) {
  const long id = (long)arg;
  unsigned long seen = created_in[id];
  for (;;) {
    unsigned long g;
    int spins = 0;
    while ((g = atomic_load_explicit(&region_state, memory_order_acquire)) == seen) {
      if (++spins < PAUSES + YIELDS) {
        wait_a_little(spins);
        continue;
      }
      pthread_mutex_lock(&sleep_lock);
      sleepers++;
      while ((g = atomic_load_explicit(&region_state, memory_order_acquire)) == seen)
        pthread_cond_wait(&wake, &sleep_lock);
      sleepers--;
      pthread_mutex_unlock(&sleep_lock);
      break;
    }
    seen = g;
    if (id < (long)(g & 0xffff)) {
      inside_region = 1;
      job_task(job_context, id);
      inside_region = 0;
      atomic_fetch_sub_explicit(&remaining, 1, memory_order_release);
    }
  }
  return 0;
}

void kvk_parallel(long workers, kvk_task task, void *context) {
  // One worker, a region inside a region, or a second caller at once: the calling thread
  // runs every worker's share itself (the results are the same; each share is independent).
  if (workers <= 1 || inside_region || pthread_mutex_trylock(&region_lock) != 0) {
    for (long w = 0; w < workers; w++) task(context, w);
    return;
  }
  if (workers - 1 > MAX_HELPERS) workers = MAX_HELPERS + 1;
  while (helpers < workers - 1) {
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 8 << 20);
    created_in[helpers + 1] = atomic_load_explicit(&region_state, memory_order_relaxed);
    const int failed = pthread_create(&thread, &attr, helper_main, (void *)(long)(helpers + 1));
    pthread_attr_destroy(&attr);
    if (failed) break;
    helpers++;
  }
  if (helpers < workers - 1) {  // no thread to be had: run the shares here
    pthread_mutex_unlock(&region_lock);
    for (long w = 0; w < workers; w++) task(context, w);
    return;
  }
  job_task = task;
  job_context = context;
  atomic_store_explicit(&remaining, (int)(workers - 1), memory_order_relaxed);
  // Only this thread (holding region_lock) writes the state: the next number, these workers.
  const unsigned long number = atomic_load_explicit(&region_state, memory_order_relaxed) >> 16;
  atomic_store_explicit(&region_state, (number + 1) << 16 | (unsigned long)workers,
                        memory_order_release);
  pthread_mutex_lock(&sleep_lock);
  if (sleepers > 0) pthread_cond_broadcast(&wake);
  pthread_mutex_unlock(&sleep_lock);
  inside_region = 1;
  task(context, 0);
  inside_region = 0;
  for (int look = 0; atomic_load_explicit(&remaining, memory_order_acquire) > 0; look++)
    wait_a_little(look < PAUSES ? look : PAUSES);
  pthread_mutex_unlock(&region_lock);
}
