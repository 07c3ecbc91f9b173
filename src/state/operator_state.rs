//! Operator state: a list per operator instance, redistributed when the parallelism changes
//! (Flink's `ListState` from `getListState` and `getUnionListState`).

/// How the instances' lists are redistributed on restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redistribution {
    /// The lists are concatenated (instance order) and split into contiguous, nearly equal parts,
    /// one per new instance (Flink's even-split redistribution).
    EvenSplit,
    /// Every new instance receives the concatenation of all lists (Flink's union redistribution).
    Union,
}

/// The list each of `parallelism` new instances restores from the old instances' `lists`.
/// Every element lands exactly once (even split) or on every instance (union).
pub fn redistribute<T: Clone>(lists: &[Vec<T>], parallelism: usize, how: Redistribution) -> Vec<Vec<T>> {
    assert!(parallelism > 0, "at least one instance");
    let all: Vec<T> = lists.iter().flatten().cloned().collect();
    match how {
        Redistribution::Union => vec![all; parallelism],
        Redistribution::EvenSplit => {
            let (base, extra) = (all.len() / parallelism, all.len() % parallelism);
            let mut parts = Vec::with_capacity(parallelism);
            let mut rest = all.into_iter();
            for instance in 0..parallelism {
                let size = base + usize::from(instance < extra);
                parts.push(rest.by_ref().take(size).collect());
            }
            parts
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn even_split_keeps_every_element_once_and_union_gives_all_to_all(
            lists in prop::collection::vec(prop::collection::vec(0u32..1000, 0..20), 1..6),
            parallelism in 1usize..8,
        ) {
            let all: Vec<u32> = lists.iter().flatten().copied().collect();
            let split = redistribute(&lists, parallelism, Redistribution::EvenSplit);
            prop_assert_eq!(split.len(), parallelism);
            prop_assert_eq!(split.concat(), all.clone());
            let sizes: Vec<usize> = split.iter().map(Vec::len).collect();
            prop_assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{:?}", sizes);
            let union = redistribute(&lists, parallelism, Redistribution::Union);
            prop_assert!(union.iter().all(|list| *list == all));
        }
    }
}
