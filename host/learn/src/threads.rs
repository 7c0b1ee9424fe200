//! Independent work items spread over threads, round robin: a flow's
//! conditioners, a C2ST's folds.

/// Threads for `items` independent items: the machine's cores, at most
/// one per item, at least one.
pub fn workers_for(items: usize) -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(items).max(1)
}

/// `first(item)` or `rest(item)` for every item, spread round robin over
/// `workers` threads: this thread takes items 0, `workers`, 2·`workers`, …
/// through `first` (which may report progress), scoped threads the others
/// through `rest`. The results come back in item order, so what is made of
/// them does not depend on `workers`.
pub fn round_robin<T: Send, R: Send>(items: Vec<T>, workers: usize, mut first: impl FnMut(T) -> R, rest: &(impl Fn(T) -> R + Sync)) -> Vec<R> {
    let workers = workers.clamp(1, items.len().max(1));
    let mut shares: Vec<Vec<(usize, T)>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        shares[i % workers].push((i, item));
    }
    let mut shares = shares.into_iter();
    let mine = shares.next().unwrap_or_default();
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = shares.map(|share| scope.spawn(move || share.into_iter().map(|(i, item)| (i, rest(item))).collect::<Vec<_>>())).collect();
        let mut done: Vec<(usize, R)> = mine.into_iter().map(|(i, item)| (i, first(item))).collect();
        for handle in handles {
            done.extend(handle.join().expect("a worker thread panicked"));
        }
        done
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_come_in_item_order_on_any_number_of_threads() {
        let items: Vec<usize> = (0..11).collect();
        for workers in [0, 1, 2, 3, 20] {
            let mut on_caller = Vec::new();
            let squares = super::round_robin(
                items.clone(),
                workers,
                |i| {
                    on_caller.push(i);
                    i * i
                },
                &|i| i * i,
            );
            assert_eq!(squares, items.iter().map(|i| i * i).collect::<Vec<_>>(), "{workers} workers");
            let step = workers.clamp(1, items.len());
            assert_eq!(on_caller, (0..11).step_by(step).collect::<Vec<_>>(), "this thread takes every {step}th item");
        }
    }
}
