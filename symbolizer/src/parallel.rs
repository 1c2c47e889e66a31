//! Work spread over the machine's cores: a symbolizer's large batches (DWARF units to index,
//! addresses to answer) are independent items.

/// Most threads used at once.
const MAX_THREADS: usize = 4;

/// Fewest items worth a thread of their own.
const ITEMS_PER_THREAD: usize = 8;

/// `f` of every item, in item order, computed on up to [`MAX_THREADS`] threads (as many as the
/// machine has cores) that take the items one at a time.
pub(crate) fn map<T: Sync, U: Send>(items: &[T], f: impl Fn(&T) -> U + Sync) -> Vec<U> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let threads = cores.min(MAX_THREADS).min(items.len() / ITEMS_PER_THREAD);
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                return done;
            };
            done.push((i, f(item)));
        }
    };
    let parts: Vec<Vec<(usize, U)>> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
        let mut parts = vec![work()];
        for helper in helpers {
            match helper.join() {
                Ok(part) => parts.push(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        parts
    });
    let mut slots: Vec<Option<U>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    for (i, u) in parts.into_iter().flatten() {
        slots[i] = Some(u);
    }
    slots.into_iter().flatten().collect()
}
