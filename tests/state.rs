//! The state layer against plain models: every keyed state type behaves like a `Vec`/`BTreeMap`
//! model and survives snapshot → restore; restoring with another parallelism keeps every key
//! exactly once; TTL expires entries exactly at `now - last_write >= ttl`; corrupt or truncated
//! snapshots are refused whole; event-time timers in a real job fire once, in order, never early.
//!
//! Every expected value is derived here, from the models or by hand, never by asking the state
//! layer for it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use flowlab::api::{Env, KeyedProcessFunction, ProcessContext};
use flowlab::connectors::{CollectSink, CollectionSource};
use flowlab::runtime::{JobConfig, execute};
use flowlab::state::snapshot::{SNAPSHOT_MAGIC, SNAPSHOT_VERSION, SnapshotError};
use flowlab::state::{
    AggregatingStateDescriptor, KeyedStateBackend, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    StateTtl, TimerService, ValueStateDescriptor, key_group, key_group_range, worker_for_key,
};
use flowlab::time::{WATERMARK_MAX, WATERMARK_MIN, WatermarkStrategy};
use flowlab::window::{AggregateFunction, TimeDomain, Window};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde::{Deserialize, Serialize};

const MAX_PARALLELISM: u32 = 128;
const KEYS: u32 = 4;

type Backend = KeyedStateBackend<u32>;
/// `(key, index into NAMESPACES)`.
type Scope = (u32, usize);

const NAMESPACES: [Window; 3] = [Window::GLOBAL, Window { start: 0, end: 10 }, Window { start: 10, end: 20 }];

// ---------------------------------------------------------------------------------------------
// Descriptors, shared by the models and the tests.

fn value_state() -> ValueStateDescriptor<i64> {
    ValueStateDescriptor::new("value")
}

fn list_state() -> ListStateDescriptor<i64> {
    ListStateDescriptor::new("list")
}

fn map_state() -> MapStateDescriptor<u8, i64> {
    MapStateDescriptor::new("map")
}

fn reducing_state() -> ReducingStateDescriptor<i64> {
    ReducingStateDescriptor::new("sum", |a: &i64, b: &i64| a + b)
}

/// The arithmetic mean, with a `(sum, count)` accumulator.
struct Average;

impl AggregateFunction<i64> for Average {
    type Accumulator = (i64, u64);
    type Output = f64;
    fn create_accumulator(&self) -> (i64, u64) {
        (0, 0)
    }
    fn add(&self, accumulator: &mut (i64, u64), value: &i64) {
        accumulator.0 += value;
        accumulator.1 += 1;
    }
    fn merge(&self, accumulator: &mut (i64, u64), other: (i64, u64)) {
        accumulator.0 += other.0;
        accumulator.1 += other.1;
    }
    fn result(&self, accumulator: &(i64, u64)) -> f64 {
        accumulator.0 as f64 / accumulator.1 as f64
    }
}

fn aggregating_state() -> AggregatingStateDescriptor<i64, Average> {
    AggregatingStateDescriptor::new("average", Average)
}

// ---------------------------------------------------------------------------------------------
// (a) Every state type against a plain model, with snapshot → restore at random points.

/// A keyed state type and its plain model, keyed by scope.
trait StateModel: Default {
    type Op: Clone + Debug;
    /// What one scope looks like from outside.
    type View: PartialEq + Debug;
    fn register(backend: &mut Backend);
    fn op() -> BoxedStrategy<Self::Op>;
    /// Applies `op` to the backend (already scoped to `scope`) and to the model, comparing what
    /// any read returns.
    fn apply(&mut self, backend: &mut Backend, scope: Scope, op: &Self::Op) -> Result<(), TestCaseError>;
    /// The backend's current scope.
    fn view(backend: &mut Backend) -> Self::View;
    /// The model's `scope`.
    fn model_view(&self, scope: Scope) -> Self::View;
    /// Keys with an entry, in any namespace.
    fn model_keys(&self) -> BTreeSet<u32>;
    fn backend_keys(backend: &Backend) -> Vec<u32>;
}

#[derive(Clone, Debug)]
enum Step<Op> {
    Key(u32),
    Namespace(usize),
    Op(Op),
    SnapshotRestore,
}

fn steps<M: StateModel>() -> impl Strategy<Value = Vec<Step<M::Op>>> {
    let step = prop_oneof![
        2 => (0..KEYS).prop_map(Step::Key),
        1 => (0..NAMESPACES.len()).prop_map(Step::Namespace),
        8 => M::op().prop_map(Step::Op),
        1 => Just(Step::SnapshotRestore),
    ];
    prop::collection::vec(step, 0..80)
}

fn fresh<M: StateModel>() -> Backend {
    let mut backend = Backend::new(MAX_PARALLELISM);
    M::register(&mut backend);
    backend
}

fn set_scope(backend: &mut Backend, scope: Scope) {
    backend.set_current_key(scope.0);
    backend.set_namespace(NAMESPACES[scope.1]);
}

/// Every scope's view, read through the public API; leaves the backend scoped to `current`.
fn observe<M: StateModel>(backend: &mut Backend, current: Scope) -> BTreeMap<Scope, M::View> {
    let mut views = BTreeMap::new();
    for key in 0..KEYS {
        for namespace in 0..NAMESPACES.len() {
            set_scope(backend, (key, namespace));
            views.insert((key, namespace), M::view(backend));
        }
    }
    set_scope(backend, current);
    views
}

fn check_against_model<M: StateModel>(backend: &mut Backend, model: &M, scope: Scope) -> Result<(), TestCaseError> {
    // Keys first: a read may tidy up an entry (an empty list, say) that should not exist.
    prop_assert_eq!(M::backend_keys(backend), model.model_keys().into_iter().collect::<Vec<u32>>());
    let views = observe::<M>(backend, scope);
    for (at, view) in views {
        prop_assert_eq!(view, model.model_view(at), "scope {:?}", at);
    }
    Ok(())
}

fn run_model<M: StateModel>(steps: &[Step<M::Op>]) -> Result<(), TestCaseError> {
    let mut backend = fresh::<M>();
    let mut model = M::default();
    let mut scope: Scope = (0, 0);
    set_scope(&mut backend, scope);
    for step in steps {
        match step {
            Step::Key(key) => {
                // Setting a key scopes to the global namespace.
                backend.set_current_key(*key);
                scope = (*key, 0);
            }
            Step::Namespace(namespace) => {
                backend.set_namespace(NAMESPACES[*namespace]);
                scope.1 = *namespace;
            }
            Step::Op(op) => model.apply(&mut backend, scope, op)?,
            Step::SnapshotRestore => {
                let before = observe::<M>(&mut backend, scope);
                let bytes = backend.snapshot();
                let mut restored = fresh::<M>();
                restored
                    .restore(std::slice::from_ref(&bytes), 0..MAX_PARALLELISM)
                    .map_err(|e| TestCaseError::fail(format!("restoring a snapshot just taken failed: {e}")))?;
                set_scope(&mut restored, scope);
                prop_assert_eq!(observe::<M>(&mut restored, scope), before);
                // Snapshots never depend on hash-map order: the restored backend writes the same bytes.
                prop_assert!(restored.snapshot() == bytes, "a restored backend snapshots to other bytes");
                backend = restored;
            }
        }
        check_against_model(&mut backend, &model, scope)?;
    }
    Ok(())
}

fn keys_with<V>(entries: &BTreeMap<Scope, V>, present: impl Fn(&V) -> bool) -> BTreeSet<u32> {
    entries.iter().filter(|(_, v)| present(v)).map(|((key, _), _)| *key).collect()
}

#[derive(Default)]
struct ValueModel(BTreeMap<Scope, i64>);

#[derive(Clone, Debug)]
enum ValueOp {
    Update(i64),
    Value,
    Clear,
}

impl StateModel for ValueModel {
    type Op = ValueOp;
    type View = Option<i64>;
    fn register(backend: &mut Backend) {
        backend.register_value(&value_state());
    }
    fn op() -> BoxedStrategy<ValueOp> {
        prop_oneof![(-1000i64..1000).prop_map(ValueOp::Update), Just(ValueOp::Value), Just(ValueOp::Clear)].boxed()
    }
    fn apply(&mut self, backend: &mut Backend, scope: Scope, op: &ValueOp) -> Result<(), TestCaseError> {
        match op {
            ValueOp::Update(v) => {
                backend.update(&value_state(), *v);
                self.0.insert(scope, *v);
            }
            ValueOp::Value => prop_assert_eq!(backend.value(&value_state()), self.0.get(&scope).copied()),
            ValueOp::Clear => {
                backend.clear(&value_state());
                self.0.remove(&scope);
            }
        }
        Ok(())
    }
    fn view(backend: &mut Backend) -> Option<i64> {
        backend.value(&value_state())
    }
    fn model_view(&self, scope: Scope) -> Option<i64> {
        self.0.get(&scope).copied()
    }
    fn model_keys(&self) -> BTreeSet<u32> {
        keys_with(&self.0, |_| true)
    }
    fn backend_keys(backend: &Backend) -> Vec<u32> {
        backend.keys(&value_state())
    }
}

#[derive(Default)]
struct ListModel(BTreeMap<Scope, Vec<i64>>);

#[derive(Clone, Debug)]
enum ListOp {
    Add(i64),
    Get,
    Update(Vec<i64>),
    Clear,
}

impl StateModel for ListModel {
    type Op = ListOp;
    type View = Vec<i64>;
    fn register(backend: &mut Backend) {
        backend.register_list(&list_state());
    }
    fn op() -> BoxedStrategy<ListOp> {
        prop_oneof![
            4 => (-1000i64..1000).prop_map(ListOp::Add),
            2 => Just(ListOp::Get),
            1 => prop::collection::vec(-1000i64..1000, 0..4).prop_map(ListOp::Update),
            1 => Just(ListOp::Clear),
        ]
        .boxed()
    }
    fn apply(&mut self, backend: &mut Backend, scope: Scope, op: &ListOp) -> Result<(), TestCaseError> {
        match op {
            ListOp::Add(v) => {
                backend.list_add(&list_state(), *v);
                self.0.entry(scope).or_default().push(*v);
            }
            ListOp::Get => prop_assert_eq!(backend.list(&list_state()), self.model_view(scope)),
            ListOp::Update(values) => {
                backend.list_update(&list_state(), values.clone());
                self.0.insert(scope, values.clone());
            }
            ListOp::Clear => {
                backend.clear(&list_state());
                self.0.remove(&scope);
            }
        }
        Ok(())
    }
    fn view(backend: &mut Backend) -> Vec<i64> {
        backend.list(&list_state())
    }
    fn model_view(&self, scope: Scope) -> Vec<i64> {
        self.0.get(&scope).cloned().unwrap_or_default()
    }
    fn model_keys(&self) -> BTreeSet<u32> {
        // An empty list is no entry (Flink: updating with an empty list clears the state).
        keys_with(&self.0, |list| !list.is_empty())
    }
    fn backend_keys(backend: &Backend) -> Vec<u32> {
        backend.keys(&list_state())
    }
}

#[derive(Default)]
struct MapModel(BTreeMap<Scope, BTreeMap<u8, i64>>);

#[derive(Clone, Debug)]
enum MapOp {
    Put(u8, i64),
    Get(u8),
    Remove(u8),
    Entries,
    Clear,
}

impl StateModel for MapModel {
    type Op = MapOp;
    type View = Vec<(u8, i64)>;
    fn register(backend: &mut Backend) {
        backend.register_map(&map_state());
    }
    fn op() -> BoxedStrategy<MapOp> {
        prop_oneof![
            4 => (0u8..5, -1000i64..1000).prop_map(|(k, v)| MapOp::Put(k, v)),
            2 => (0u8..5).prop_map(MapOp::Get),
            2 => (0u8..5).prop_map(MapOp::Remove),
            1 => Just(MapOp::Entries),
            1 => Just(MapOp::Clear),
        ]
        .boxed()
    }
    fn apply(&mut self, backend: &mut Backend, scope: Scope, op: &MapOp) -> Result<(), TestCaseError> {
        match op {
            MapOp::Put(k, v) => {
                backend.map_put(&map_state(), *k, *v);
                self.0.entry(scope).or_default().insert(*k, *v);
            }
            MapOp::Get(k) => {
                let expected = self.0.get(&scope).and_then(|map| map.get(k)).copied();
                prop_assert_eq!(backend.map_get(&map_state(), k), expected);
            }
            MapOp::Remove(k) => {
                backend.map_remove(&map_state(), k);
                if let Some(map) = self.0.get_mut(&scope) {
                    map.remove(k);
                }
            }
            MapOp::Entries => prop_assert_eq!(backend.map_entries(&map_state()), self.model_view(scope)),
            MapOp::Clear => {
                backend.clear(&map_state());
                self.0.remove(&scope);
            }
        }
        Ok(())
    }
    fn view(backend: &mut Backend) -> Vec<(u8, i64)> {
        backend.map_entries(&map_state())
    }
    fn model_view(&self, scope: Scope) -> Vec<(u8, i64)> {
        self.0.get(&scope).map(|map| map.iter().map(|(k, v)| (*k, *v)).collect()).unwrap_or_default()
    }
    fn model_keys(&self) -> BTreeSet<u32> {
        keys_with(&self.0, |map| !map.is_empty())
    }
    fn backend_keys(backend: &Backend) -> Vec<u32> {
        backend.keys(&map_state())
    }
}

/// Reducing state (sum) against the list of everything added since the last clear.
#[derive(Default)]
struct ReducingModel(BTreeMap<Scope, Vec<i64>>);

#[derive(Clone, Debug)]
enum FoldOp {
    Add(i64),
    Get,
    Clear,
}

fn fold_op() -> BoxedStrategy<FoldOp> {
    prop_oneof![4 => (-1000i64..1000).prop_map(FoldOp::Add), 2 => Just(FoldOp::Get), 1 => Just(FoldOp::Clear)].boxed()
}

impl StateModel for ReducingModel {
    type Op = FoldOp;
    type View = Option<i64>;
    fn register(backend: &mut Backend) {
        backend.register_reducing(&reducing_state());
    }
    fn op() -> BoxedStrategy<FoldOp> {
        fold_op()
    }
    fn apply(&mut self, backend: &mut Backend, scope: Scope, op: &FoldOp) -> Result<(), TestCaseError> {
        match op {
            FoldOp::Add(v) => {
                backend.reduce_add(&reducing_state(), *v);
                self.0.entry(scope).or_default().push(*v);
            }
            FoldOp::Get => prop_assert_eq!(backend.reduce_get(&reducing_state()), self.model_view(scope)),
            FoldOp::Clear => {
                backend.clear(&reducing_state());
                self.0.remove(&scope);
            }
        }
        Ok(())
    }
    fn view(backend: &mut Backend) -> Option<i64> {
        backend.reduce_get(&reducing_state())
    }
    fn model_view(&self, scope: Scope) -> Option<i64> {
        let added = self.0.get(&scope)?;
        (!added.is_empty()).then(|| added.iter().sum())
    }
    fn model_keys(&self) -> BTreeSet<u32> {
        keys_with(&self.0, |added| !added.is_empty())
    }
    fn backend_keys(backend: &Backend) -> Vec<u32> {
        backend.keys(&reducing_state())
    }
}

/// Aggregating state (average) against the list of everything added since the last clear.
#[derive(Default)]
struct AggregatingModel(BTreeMap<Scope, Vec<i64>>);

impl StateModel for AggregatingModel {
    type Op = FoldOp;
    type View = Option<f64>;
    fn register(backend: &mut Backend) {
        backend.register_aggregating(&aggregating_state());
    }
    fn op() -> BoxedStrategy<FoldOp> {
        fold_op()
    }
    fn apply(&mut self, backend: &mut Backend, scope: Scope, op: &FoldOp) -> Result<(), TestCaseError> {
        match op {
            FoldOp::Add(v) => {
                backend.aggregate_add(&aggregating_state(), v);
                self.0.entry(scope).or_default().push(*v);
            }
            FoldOp::Get => prop_assert_eq!(backend.aggregate_get(&aggregating_state()), self.model_view(scope)),
            FoldOp::Clear => {
                backend.clear(&aggregating_state());
                self.0.remove(&scope);
            }
        }
        Ok(())
    }
    fn view(backend: &mut Backend) -> Option<f64> {
        backend.aggregate_get(&aggregating_state())
    }
    fn model_view(&self, scope: Scope) -> Option<f64> {
        let added = self.0.get(&scope)?;
        // Integer sum, one division: exactly what any correct average computes.
        (!added.is_empty()).then(|| added.iter().sum::<i64>() as f64 / added.len() as f64)
    }
    fn model_keys(&self) -> BTreeSet<u32> {
        keys_with(&self.0, |added| !added.is_empty())
    }
    fn backend_keys(backend: &Backend) -> Vec<u32> {
        backend.keys(&aggregating_state())
    }
}

/// All five state types in one backend, interleaved: no state sees another's entries, and one
/// snapshot carries them all.
#[derive(Default)]
struct AllModel {
    value: ValueModel,
    list: ListModel,
    map: MapModel,
    reducing: ReducingModel,
    aggregating: AggregatingModel,
}

#[derive(Clone, Debug)]
enum AnyOp {
    Value(ValueOp),
    List(ListOp),
    Map(MapOp),
    Reducing(FoldOp),
    Aggregating(FoldOp),
}

type AllView = (Option<i64>, Vec<i64>, Vec<(u8, i64)>, Option<i64>, Option<f64>);

impl StateModel for AllModel {
    type Op = AnyOp;
    type View = AllView;
    fn register(backend: &mut Backend) {
        ValueModel::register(backend);
        ListModel::register(backend);
        MapModel::register(backend);
        ReducingModel::register(backend);
        AggregatingModel::register(backend);
    }
    fn op() -> BoxedStrategy<AnyOp> {
        prop_oneof![
            ValueModel::op().prop_map(AnyOp::Value),
            ListModel::op().prop_map(AnyOp::List),
            MapModel::op().prop_map(AnyOp::Map),
            ReducingModel::op().prop_map(AnyOp::Reducing),
            AggregatingModel::op().prop_map(AnyOp::Aggregating),
        ]
        .boxed()
    }
    fn apply(&mut self, backend: &mut Backend, scope: Scope, op: &AnyOp) -> Result<(), TestCaseError> {
        match op {
            AnyOp::Value(op) => self.value.apply(backend, scope, op),
            AnyOp::List(op) => self.list.apply(backend, scope, op),
            AnyOp::Map(op) => self.map.apply(backend, scope, op),
            AnyOp::Reducing(op) => self.reducing.apply(backend, scope, op),
            AnyOp::Aggregating(op) => self.aggregating.apply(backend, scope, op),
        }
    }
    fn view(backend: &mut Backend) -> AllView {
        (
            ValueModel::view(backend),
            ListModel::view(backend),
            MapModel::view(backend),
            ReducingModel::view(backend),
            AggregatingModel::view(backend),
        )
    }
    fn model_view(&self, scope: Scope) -> AllView {
        (
            self.value.model_view(scope),
            self.list.model_view(scope),
            self.map.model_view(scope),
            self.reducing.model_view(scope),
            self.aggregating.model_view(scope),
        )
    }
    fn model_keys(&self) -> BTreeSet<u32> {
        // Checked per state below; here, the union.
        let mut keys = self.value.model_keys();
        keys.extend(self.list.model_keys());
        keys.extend(self.map.model_keys());
        keys.extend(self.reducing.model_keys());
        keys.extend(self.aggregating.model_keys());
        keys
    }
    fn backend_keys(backend: &Backend) -> Vec<u32> {
        let mut keys: BTreeSet<u32> = ValueModel::backend_keys(backend).into_iter().collect();
        keys.extend(ListModel::backend_keys(backend));
        keys.extend(MapModel::backend_keys(backend));
        keys.extend(ReducingModel::backend_keys(backend));
        keys.extend(AggregatingModel::backend_keys(backend));
        keys.into_iter().collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn value_state_behaves_like_a_map_of_options(steps in steps::<ValueModel>()) {
        run_model::<ValueModel>(&steps)?;
    }

    #[test]
    fn list_state_behaves_like_a_vec(steps in steps::<ListModel>()) {
        run_model::<ListModel>(&steps)?;
    }

    #[test]
    fn map_state_behaves_like_a_btree_map(steps in steps::<MapModel>()) {
        run_model::<MapModel>(&steps)?;
    }

    #[test]
    fn reducing_state_behaves_like_a_fold(steps in steps::<ReducingModel>()) {
        run_model::<ReducingModel>(&steps)?;
    }

    #[test]
    fn aggregating_state_behaves_like_a_fold(steps in steps::<AggregatingModel>()) {
        run_model::<AggregatingModel>(&steps)?;
    }

    #[test]
    fn all_state_types_together_stay_apart(steps in steps::<AllModel>()) {
        run_model::<AllModel>(&steps)?;
    }
}

#[test]
fn state_is_scoped_to_key_and_namespace() {
    let mut backend = fresh::<AllModel>();
    backend.set_current_key(1);
    backend.update(&value_state(), 10);
    backend.set_namespace(NAMESPACES[1]);
    assert_eq!(backend.value(&value_state()), None, "another namespace of the same key is another scope");
    backend.update(&value_state(), 11);
    backend.set_current_key(2);
    assert_eq!(backend.value(&value_state()), None, "another key is another scope");
    backend.set_current_key(1);
    assert_eq!(backend.value(&value_state()), Some(10), "set_current_key returns to the global namespace");
    backend.set_namespace(NAMESPACES[1]);
    assert_eq!(backend.value(&value_state()), Some(11));
    backend.clear(&value_state());
    backend.set_namespace(NAMESPACES[0]);
    assert_eq!(backend.value(&value_state()), Some(10), "clear removes only the current scope");
}

// ---------------------------------------------------------------------------------------------
// (b) Rescaling: N workers' snapshots restore on M workers, every key exactly once.

/// Timers for key `key` in the rescaling test.
fn timers_of(key: u32) -> [i64; 2] {
    [i64::from(key) * 10, i64::from(key) * 10 + 7]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn restoring_with_another_parallelism_keeps_every_key_exactly_once(
        values in prop::collection::btree_map(0u32..100_000, -1000i64..1000, 0..80),
        old_parallelism in 1usize..5,
        new_parallelism in 1usize..5,
        max_parallelism in prop::sample::select(vec![4u32, 5, 7, 16, 128]),
    ) {
        // The owner of a key, by Flink's formulas, written out here.
        let owner = |key: &u32, parallelism: usize| {
            let group = key_group(key, max_parallelism) as usize;
            let worker = group * parallelism / max_parallelism as usize;
            assert_eq!(worker, worker_for_key(key, max_parallelism, parallelism));
            worker
        };
        let register = |backend: &mut Backend| {
            backend.register_value(&value_state());
            backend.register_list(&list_state());
        };
        // Each old worker holds only its own keys: a value, a two-element list, a windowed value, timers.
        let mut old: Vec<(Backend, TimerService<u32>)> = (0..old_parallelism)
            .map(|_| {
                let mut backend = Backend::new(max_parallelism);
                register(&mut backend);
                (backend, TimerService::new())
            })
            .collect();
        for (key, value) in &values {
            let (backend, timers) = &mut old[owner(key, old_parallelism)];
            backend.set_current_key(*key);
            backend.update(&value_state(), *value);
            backend.list_add(&list_state(), *value);
            backend.list_add(&list_state(), -*value);
            backend.set_namespace(NAMESPACES[2]);
            backend.update(&value_state(), *value + 1);
            for time in timers_of(*key) {
                timers.register_event_time(*key, time, WATERMARK_MIN, false);
            }
        }
        let snapshots: Vec<Vec<u8>> = old.iter().map(|(backend, _)| backend.snapshot()).collect();
        let timer_snapshots: Vec<Vec<u8>> = old.iter().map(|(_, timers)| timers.snapshot()).collect();

        let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
        for worker in 0..new_parallelism {
            let range = key_group_range(worker, max_parallelism, new_parallelism);
            let mut backend = Backend::new(max_parallelism);
            register(&mut backend);
            // The order of the old snapshots must not matter.
            let mut inputs = snapshots.clone();
            if worker % 2 == 1 {
                inputs.reverse();
            }
            backend.restore(&inputs, range.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut timers = TimerService::<u32>::new();
            timers
                .restore(&timer_snapshots, range.clone(), max_parallelism)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;

            let mine: Vec<u32> = values.keys().copied().filter(|key| owner(key, new_parallelism) == worker).collect();
            prop_assert_eq!(backend.keys(&value_state()), mine.clone(), "value-state keys of worker {}", worker);
            prop_assert_eq!(backend.keys(&list_state()), mine.clone(), "list-state keys of worker {}", worker);
            prop_assert_eq!(backend.entry_count(), 3 * mine.len());
            for (key, value) in &values {
                backend.set_current_key(*key);
                let here = owner(key, new_parallelism) == worker;
                if here {
                    *seen.entry(*key).or_default() += 1;
                }
                prop_assert_eq!(backend.value(&value_state()), here.then_some(*value));
                prop_assert_eq!(backend.list(&list_state()), if here { vec![*value, -*value] } else { vec![] });
                backend.set_namespace(NAMESPACES[2]);
                prop_assert_eq!(backend.value(&value_state()), here.then_some(*value + 1));
            }
            let mut expected_timers: Vec<(TimeDomain, i64, u32)> = mine
                .iter()
                .flat_map(|key| timers_of(*key).map(|time| (TimeDomain::EventTime, time, *key)))
                .collect();
            expected_timers.sort_by_key(|(_, time, key)| (*time, *key));
            prop_assert_eq!(timers.pending(), expected_timers, "timers of worker {}", worker);
        }
        let every_key_once: BTreeMap<u32, usize> = values.keys().map(|key| (*key, 1)).collect();
        prop_assert_eq!(seen, every_key_once);
    }
}

// ---------------------------------------------------------------------------------------------
// (c) TTL: gone exactly when `now - last_write >= ttl`.

/// Sets the clock that `ttl` is measured on to `now`, and the other clock far away, to show it
/// plays no part.
fn set_clock(backend: &mut Backend, ttl: &StateTtl, now: i64) {
    match ttl.time {
        flowlab::state::TtlTime::ProcessingTime => backend.set_time(now, WATERMARK_MIN),
        flowlab::state::TtlTime::EventTime => backend.set_time(i64::MAX / 2, now),
    }
}

fn ttl_kinds(ttl_ms: i64) -> [StateTtl; 2] {
    [StateTtl::processing_time(ttl_ms), StateTtl::event_time(ttl_ms)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_state_type_expires_exactly_at_the_ttl(ttl_ms in 1i64..100_000, written in -1_000_000i64..1_000_000) {
        for ttl in ttl_kinds(ttl_ms) {
            let value = value_state().with_ttl(ttl);
            let list = list_state().with_ttl(ttl);
            let map = map_state().with_ttl(ttl);
            let reducing = reducing_state().with_ttl(ttl);
            let aggregating = aggregating_state().with_ttl(ttl);
            let mut backend = Backend::new(MAX_PARALLELISM);
            backend.set_current_key(1);
            set_clock(&mut backend, &ttl, written);
            backend.update(&value, 5);
            backend.list_add(&list, 5);
            backend.map_put(&map, 0, 5);
            backend.reduce_add(&reducing, 5);
            backend.aggregate_add(&aggregating, &5);

            // One millisecond before the TTL: everything is there (and, without refresh_on_read,
            // reading it renews nothing).
            set_clock(&mut backend, &ttl, written + ttl_ms - 1);
            prop_assert_eq!(backend.value(&value), Some(5), "{:?}", ttl);
            prop_assert_eq!(backend.list(&list), vec![5]);
            prop_assert_eq!(backend.map_get(&map, &0), Some(5));
            prop_assert_eq!(backend.map_entries(&map), vec![(0, 5)]);
            prop_assert_eq!(backend.reduce_get(&reducing), Some(5));
            prop_assert_eq!(backend.aggregate_get(&aggregating), Some(5.0));

            // At the TTL: gone.
            set_clock(&mut backend, &ttl, written + ttl_ms);
            prop_assert_eq!(backend.value(&value), None, "{:?}", ttl);
            prop_assert_eq!(backend.list(&list), Vec::<i64>::new());
            prop_assert_eq!(backend.map_get(&map, &0), None);
            prop_assert_eq!(backend.map_entries(&map), vec![]);
            prop_assert_eq!(backend.reduce_get(&reducing), None);
            prop_assert_eq!(backend.aggregate_get(&aggregating), None);

            // Folding into expired state starts afresh.
            backend.reduce_add(&reducing, 3);
            backend.aggregate_add(&aggregating, &3);
            prop_assert_eq!(backend.reduce_get(&reducing), Some(3));
            prop_assert_eq!(backend.aggregate_get(&aggregating), Some(3.0));
        }
    }

    #[test]
    fn refresh_on_read_renews_at_every_read(ttl_ms in 1i64..100_000, written in -1_000_000i64..1_000_000) {
        for ttl in ttl_kinds(ttl_ms) {
            let ttl = ttl.refreshed_on_read();
            let value = value_state().with_ttl(ttl);
            let list = list_state().with_ttl(ttl);
            let map = map_state().with_ttl(ttl);
            let reducing = reducing_state().with_ttl(ttl);
            let mut backend = Backend::new(MAX_PARALLELISM);
            backend.set_current_key(1);
            set_clock(&mut backend, &ttl, written);
            backend.update(&value, 5);
            backend.list_add(&list, 5);
            backend.map_put(&map, 0, 5);
            backend.reduce_add(&reducing, 5);
            // Each read, ttl - 1 after the previous one, renews the entry; the third read, a full
            // ttl after the second, finds it gone.
            let first_read = written + ttl_ms - 1;
            let second_read = first_read + ttl_ms - 1;
            for now in [first_read, second_read] {
                set_clock(&mut backend, &ttl, now);
                prop_assert_eq!(backend.value(&value), Some(5), "{:?} at {}", ttl, now);
                prop_assert_eq!(backend.list(&list), vec![5]);
                prop_assert_eq!(backend.map_get(&map, &0), Some(5));
                prop_assert_eq!(backend.reduce_get(&reducing), Some(5));
            }
            set_clock(&mut backend, &ttl, second_read + ttl_ms);
            prop_assert_eq!(backend.value(&value), None, "{:?}", ttl);
            prop_assert_eq!(backend.list(&list), Vec::<i64>::new());
            prop_assert_eq!(backend.map_get(&map, &0), None);
            prop_assert_eq!(backend.reduce_get(&reducing), None);
        }
    }
}

#[test]
fn list_and_map_entries_expire_one_by_one() {
    for ttl in ttl_kinds(100) {
        let list = list_state().with_ttl(ttl);
        let map = map_state().with_ttl(ttl);
        let mut backend = Backend::new(MAX_PARALLELISM);
        backend.set_current_key(7);
        for (now, element) in [(0, 1), (30, 2), (60, 3)] {
            set_clock(&mut backend, &ttl, now);
            backend.list_add(&list, element);
            backend.map_put(&map, element as u8, element);
        }
        // Written at 0, 30, 60: at 129 the first is gone (129 - 0 >= 100), the second is not.
        set_clock(&mut backend, &ttl, 129);
        assert_eq!(backend.list(&list), vec![2, 3], "{ttl:?}");
        assert_eq!(backend.map_entries(&map), vec![(2, 2), (3, 3)]);
        set_clock(&mut backend, &ttl, 130);
        assert_eq!(backend.list(&list), vec![3]);
        assert_eq!(backend.map_get(&map, &2), None);
        assert_eq!(backend.map_entries(&map), vec![(3, 3)]);
        set_clock(&mut backend, &ttl, 160);
        assert_eq!(backend.list(&list), Vec::<i64>::new());
        assert_eq!(backend.map_entries(&map), vec![]);
    }
}

/// Flink's `OnReadAndWrite` renews an entry on every read, and iterating a map state's entries
/// reads them (Flink's `TtlMapState` renews each entry its iterator returns).
#[test]
fn map_entries_is_a_read_that_renews_with_refresh_on_read() {
    for ttl in ttl_kinds(100) {
        let ttl = ttl.refreshed_on_read();
        let map = map_state().with_ttl(ttl);
        let mut backend = Backend::new(MAX_PARALLELISM);
        backend.set_current_key(7);
        set_clock(&mut backend, &ttl, 0);
        backend.map_put(&map, 1, 10);
        set_clock(&mut backend, &ttl, 99);
        assert_eq!(backend.map_entries(&map), vec![(1, 10)], "{ttl:?}");
        set_clock(&mut backend, &ttl, 198);
        assert_eq!(backend.map_entries(&map), vec![(1, 10)], "{ttl:?}: the read at 99 renewed the entry");
    }
}

#[test]
fn expired_entries_do_not_come_back_from_a_snapshot() {
    for ttl in ttl_kinds(100) {
        let value = value_state().with_ttl(ttl);
        let list = list_state().with_ttl(ttl);
        let map = map_state().with_ttl(ttl);
        let refreshed = ValueStateDescriptor::<i64>::new("refreshed").with_ttl(ttl.refreshed_on_read());
        let register = |backend: &mut Backend| {
            backend.register_value(&value);
            backend.register_list(&list);
            backend.register_map(&map);
            backend.register_value(&refreshed);
        };
        let mut backend = Backend::new(MAX_PARALLELISM);
        register(&mut backend);
        // Key k is written at 10 * k, for k in 0..10.
        for key in 0..10u32 {
            backend.set_current_key(key);
            set_clock(&mut backend, &ttl, 10 * i64::from(key));
            backend.update(&value, i64::from(key));
            backend.list_add(&list, i64::from(key));
            backend.map_put(&map, 0, i64::from(key));
            backend.update(&refreshed, i64::from(key));
        }
        // Key 0's refreshed entry is read at 99, which renews it until 199.
        backend.set_current_key(0);
        set_clock(&mut backend, &ttl, 99);
        assert_eq!(backend.value(&refreshed), Some(0));
        // At 145, keys 0..=4 are expired (145 - 40 >= 100), 5..10 are not; nothing was read since.
        let now = 145;
        let bytes = backend.snapshot();
        let mut restored = Backend::new(MAX_PARALLELISM);
        register(&mut restored);
        restored.restore(&[bytes], 0..MAX_PARALLELISM).unwrap();
        for key in 0..10u32 {
            restored.set_current_key(key);
            set_clock(&mut restored, &ttl, now);
            let live = key >= 5;
            let expected = live.then_some(i64::from(key));
            assert_eq!(restored.value(&value), expected, "{ttl:?} key {key}");
            assert_eq!(restored.list(&list), expected.into_iter().collect::<Vec<_>>());
            assert_eq!(restored.map_entries(&map), expected.map(|v| (0, v)).into_iter().collect::<Vec<_>>());
            let renewed = live || key == 0;
            assert_eq!(restored.value(&refreshed), renewed.then_some(i64::from(key)), "{ttl:?} key {key}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (d) Corrupt and truncated snapshots are refused whole, with an error that names the damage.

const HEADER: usize = 28;

fn source_backend() -> Backend {
    let mut backend = fresh::<AllModel>();
    for key in 0..6u32 {
        backend.set_current_key(key);
        backend.update(&value_state(), i64::from(key) * 100);
        backend.list_add(&list_state(), i64::from(key));
        backend.map_put(&map_state(), key as u8, 1);
        backend.reduce_add(&reducing_state(), 2);
        backend.aggregate_add(&aggregating_state(), &4);
    }
    backend
}

/// A backend with other contents: what a failed restore must leave alone.
fn target_backend() -> Backend {
    let mut backend = fresh::<AllModel>();
    for key in [1u32, 9] {
        backend.set_current_key(key);
        backend.update(&value_state(), -7);
        backend.list_add(&list_state(), -8);
    }
    backend
}

fn assert_target_unchanged(target: &mut Backend, before: &[u8]) -> Result<(), TestCaseError> {
    for key in [1u32, 9] {
        target.set_current_key(key);
        prop_assert_eq!(target.value(&value_state()), Some(-7));
        prop_assert_eq!(target.list(&list_state()), vec![-8]);
    }
    target.set_current_key(0);
    prop_assert_eq!(target.value(&value_state()), None);
    prop_assert_eq!(target.keys(&value_state()), vec![1, 9]);
    prop_assert!(target.snapshot() == before, "a refused restore changed the backend");
    Ok(())
}

/// Restores `damaged` into a fresh target, expects an error and an untouched target, and returns
/// the error.
fn refused(damaged: &[u8]) -> Result<SnapshotError, TestCaseError> {
    let mut target = target_backend();
    let before = target.snapshot();
    let result = target.restore(&[damaged.to_vec()], 0..MAX_PARALLELISM);
    let Err(error) = result else {
        return Err(TestCaseError::fail("a damaged snapshot was accepted"));
    };
    assert_target_unchanged(&mut target, &before)?;
    Ok(error)
}

/// The error flipping `position` of `bytes` (with `mask`) must give, derived from the format's
/// layout, and the word its message must contain.
fn expected_damage(bytes: &[u8], position: usize, mask: u8) -> (&'static str, fn(&SnapshotError) -> bool) {
    match position {
        0..8 => ("magic", |e| matches!(e, SnapshotError::BadMagic)),
        8..12 => ("version", |e| matches!(e, SnapshotError::Version { .. })),
        12..16 => ("kind", |e| matches!(e, SnapshotError::Kind { .. })),
        16..24 => {
            let mut length = [0u8; 8];
            length.copy_from_slice(&bytes[16..24]);
            length[position - 16] ^= mask;
            if u64::from_le_bytes(length) > (bytes.len() - HEADER) as u64 {
                ("truncated", |e| matches!(e, SnapshotError::Truncated { .. }))
            } else {
                ("unexpected bytes", |e| matches!(e, SnapshotError::TrailingBytes { .. }))
            }
        }
        // CRC-32 detects every burst of up to 32 bits: any one damaged byte.
        _ => ("checksum", |e| matches!(e, SnapshotError::Checksum { .. })),
    }
}

fn check_flip(bytes: &[u8], position: usize, mask: u8) -> Result<(), TestCaseError> {
    let mut damaged = bytes.to_vec();
    damaged[position] ^= mask;
    let error = refused(&damaged)?;
    let (word, is_expected) = expected_damage(bytes, position, mask);
    prop_assert!(is_expected(&error), "flipping byte {} with {:#04x} gave {:?}", position, mask, error);
    prop_assert!(error.to_string().contains(word), "{:?} does not say {:?}", error.to_string(), word);
    Ok(())
}

fn check_truncation(bytes: &[u8], length: usize) -> Result<(), TestCaseError> {
    let error = refused(&bytes[..length])?;
    prop_assert!(matches!(error, SnapshotError::Truncated { .. }), "truncated to {}: {:?}", length, error);
    prop_assert!(error.to_string().contains("truncated"), "{}", error);
    Ok(())
}

#[test]
fn the_header_is_the_documented_one() {
    let bytes = source_backend().snapshot();
    assert_eq!(&bytes[0..8], SNAPSHOT_MAGIC);
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), SNAPSHOT_VERSION);
    assert_eq!(u64::from_le_bytes(bytes[16..24].try_into().unwrap()), (bytes.len() - HEADER) as u64);
    assert_eq!(u32::from_le_bytes(bytes[24..28].try_into().unwrap()), crc32fast::hash(&bytes[HEADER..]));
}

#[test]
fn every_single_byte_flip_and_every_truncation_is_refused() {
    let bytes = source_backend().snapshot();
    for position in 0..bytes.len() {
        for mask in [0x01, 0x80, 0xff] {
            check_flip(&bytes, position, mask).unwrap();
        }
    }
    for length in 0..bytes.len() {
        check_truncation(&bytes, length).unwrap();
    }
    let mut longer = bytes.clone();
    longer.push(0);
    let error = refused(&longer).unwrap();
    assert_eq!(error, SnapshotError::TrailingBytes { extra: 1 });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_flipped_byte_is_refused(position in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let bytes = source_backend().snapshot();
        check_flip(&bytes, position.index(bytes.len()), mask)?;
    }

    #[test]
    fn any_truncation_is_refused(length in any::<prop::sample::Index>()) {
        let bytes = source_backend().snapshot();
        check_truncation(&bytes, length.index(bytes.len()))?;
    }

    /// A payload damaged *behind* a recomputed checksum (a bug, not the disk) must still never
    /// panic nor half-restore: it is decoded or refused, whole.
    #[test]
    fn a_damaged_payload_with_a_valid_checksum_never_panics(
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let mut bytes = source_backend().snapshot();
        let payload_length = bytes.len() - HEADER;
        for (position, mask) in flips {
            bytes[HEADER + position.index(payload_length)] ^= mask;
        }
        let crc = crc32fast::hash(&bytes[HEADER..]);
        bytes[24..28].copy_from_slice(&crc.to_le_bytes());
        let mut target = target_backend();
        let before = target.snapshot();
        if target.restore(&[bytes], 0..MAX_PARALLELISM).is_err() {
            assert_target_unchanged(&mut target, &before)?;
        }
    }
}

#[test]
fn a_good_snapshot_followed_by_a_bad_one_restores_nothing() {
    let good = source_backend().snapshot();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let mut target = target_backend();
    let before = target.snapshot();
    let error = target.restore(&[good.clone(), bad], 0..MAX_PARALLELISM).unwrap_err();
    assert!(matches!(error, SnapshotError::Checksum { .. }), "{error:?}");
    assert_target_unchanged(&mut target, &before).unwrap();
    // The same snapshot twice would put a key in two places: refused too, and nothing restored.
    let error = target.restore(&[good.clone(), good], 0..MAX_PARALLELISM).unwrap_err();
    assert!(error.to_string().contains("two snapshots"), "{error}");
    assert_target_unchanged(&mut target, &before).unwrap();
}

#[test]
fn a_snapshot_of_another_job_shape_is_refused_with_a_reason() {
    let bytes = source_backend().snapshot();
    // Another number of key groups.
    let mut other = Backend::new(64);
    AllModel::register(&mut other);
    let error = other.restore(std::slice::from_ref(&bytes), 0..64).unwrap_err();
    assert!(error.to_string().contains("max parallelism"), "{error}");
    // A state the operator does not declare.
    let mut fewer = Backend::new(MAX_PARALLELISM);
    fewer.register_value(&value_state());
    let error = fewer.restore(std::slice::from_ref(&bytes), 0..MAX_PARALLELISM).unwrap_err();
    assert!(error.to_string().contains("does not declare"), "{error}");
    // Timers refuse damage too, and keep their old contents.
    let mut timers = TimerService::<u32>::new();
    timers.register_event_time(3, 30, WATERMARK_MIN, false);
    let mut snapshot = timers.snapshot();
    snapshot.truncate(snapshot.len() - 1);
    let mut target = TimerService::<u32>::new();
    target.register_event_time(4, 40, WATERMARK_MIN, false);
    let error = target.restore(&[snapshot], 0..MAX_PARALLELISM, MAX_PARALLELISM).unwrap_err();
    assert!(error.to_string().contains("truncated"), "{error}");
    assert_eq!(target.pending(), vec![(TimeDomain::EventTime, 40, 4)]);
}

// ---------------------------------------------------------------------------------------------
// (e) Timers through a real job.

/// An input element: register these event-time timers, once each in this order (repeats
/// included), then one `watermark - past` (a timer in the past, or at the watermark itself),
/// then delete one.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Probe {
    key: u32,
    register: Vec<i64>,
    past: Option<i64>,
    delete: Option<i64>,
}

/// What the probe function reports, numbered per key so that the per-key order survives any
/// sink order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Seen {
    /// An element arrived with the operator at this watermark.
    Element {
        watermark: i64,
    },
    Registered {
        time: i64,
        watermark: i64,
    },
    Deleted {
        time: i64,
    },
    Fired {
        time: i64,
        watermark: i64,
    },
}

struct TimerProbe {
    sequence: ValueStateDescriptor<u64>,
}

impl TimerProbe {
    fn report(&self, seen: Seen, ctx: &mut ProcessContext<'_, u32, (u32, u64, Seen)>) {
        let sequence = ctx.state.value(&self.sequence).unwrap_or(0);
        ctx.state.update(&self.sequence, sequence + 1);
        let key = *ctx.key();
        ctx.collect((key, sequence, seen));
    }
}

impl KeyedProcessFunction<u32, Probe> for TimerProbe {
    type Output = (u32, u64, Seen);

    fn open(&mut self, state: &mut KeyedStateBackend<u32>) {
        state.register_value(&self.sequence);
    }

    fn process_element(&mut self, probe: Probe, ctx: &mut ProcessContext<'_, u32, Self::Output>) {
        let watermark = ctx.current_watermark_ms();
        self.report(Seen::Element { watermark }, ctx);
        let past = probe.past.filter(|_| watermark != WATERMARK_MIN).map(|past| watermark - past);
        for time in probe.register.into_iter().chain(past) {
            ctx.register_event_time_timer(time);
            self.report(Seen::Registered { time, watermark }, ctx);
        }
        if let Some(time) = probe.delete {
            ctx.delete_event_time_timer(time);
            self.report(Seen::Deleted { time }, ctx);
        }
    }

    fn on_timer(&mut self, time: i64, domain: TimeDomain, ctx: &mut ProcessContext<'_, u32, Self::Output>) {
        assert_eq!(domain, TimeDomain::EventTime);
        assert_eq!(ctx.timestamp_ms(), time);
        let watermark = ctx.current_watermark_ms();
        self.report(Seen::Fired { time, watermark }, ctx);
    }
}

/// A deterministic input: 400 elements over 7 keys, times mostly rising with jitter.
fn probes() -> Vec<(i64, Probe)> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound
    };
    let mut last_registered: BTreeMap<u32, i64> = BTreeMap::new();
    (0..400)
        .map(|i| {
            let key = next(7) as u32;
            let time = 10 * i + next(40) as i64;
            let mut register = Vec::new();
            for _ in 0..next(3) {
                let at = time + 1 + next(300) as i64;
                register.push(at);
                if next(4) == 0 {
                    register.push(at); // the same timer twice in one call
                }
            }
            if next(3) == 0
                && let Some(previous) = last_registered.get(&key)
            {
                register.push(*previous); // again, perhaps still pending, perhaps fired
            }
            if let Some(last) = register.last() {
                last_registered.insert(key, *last);
            }
            let past = (next(4) == 0).then(|| next(60) as i64);
            let delete = (next(6) == 0).then(|| last_registered.get(&key).copied()).flatten();
            (time, Probe { key, register, past, delete })
        })
        .collect()
}

fn run_probes(input: Vec<(i64, Probe)>, strategy: WatermarkStrategy, parallelism: usize) -> Vec<(u32, u64, Seen)> {
    let out = CollectSink::new();
    let sink = out.clone();
    execute(&JobConfig::threads("timers", parallelism), move |env: &Env| {
        env.source(CollectionSource::new(input.clone()), strategy.clone())
            .key_by(|probe: &Probe| probe.key)
            .process(TimerProbe { sequence: ValueStateDescriptor::new("sequence") })
            .sink(sink.clone());
    })
    .unwrap();
    out.sorted_values()
}

/// Checks one key's history against the rules, and returns the `(time)` of every firing.
fn check_timer_history(key: u32, history: &[(u64, Seen)]) -> Vec<i64> {
    // time → the watermark at registration, for timers registered and not yet fired or deleted.
    let mut pending: BTreeMap<i64, i64> = BTreeMap::new();
    let mut fired = Vec::new();
    // When a pending timer may fire: at its time, or, registered at or below the watermark, at
    // the next higher watermark.
    let due = |time: i64, registered_at: i64| if time > registered_at { time } else { registered_at + 1 };
    for (index, (sequence, seen)) in history.iter().enumerate() {
        assert_eq!(*sequence, index as u64, "key {key}: reports are numbered without gaps");
        match *seen {
            Seen::Element { watermark } => {
                // Never late: nothing due at this watermark is still waiting.
                for (&time, &registered_at) in &pending {
                    assert!(
                        due(time, registered_at) > watermark,
                        "key {key}: timer {time} (registered at watermark {registered_at}) had not fired by \
                         watermark {watermark}"
                    );
                }
            }
            Seen::Registered { time, watermark } => {
                // A duplicate of a pending timer coalesces with it.
                pending.entry(time).or_insert(watermark);
            }
            Seen::Deleted { time } => {
                pending.remove(&time);
            }
            Seen::Fired { time, watermark } => {
                let registered_at = pending
                    .remove(&time)
                    .unwrap_or_else(|| panic!("key {key}: timer {time} fired but was not pending (twice? deleted?)"));
                assert!(time <= watermark, "key {key}: timer {time} fired early, at watermark {watermark}");
                assert!(
                    watermark >= due(time, registered_at),
                    "key {key}: timer {time} registered at watermark {registered_at} fired at {watermark}"
                );
                if let Some((&earlier, _)) = pending.first_key_value() {
                    assert!(earlier > time, "key {key}: timer {time} fired while {earlier} was pending");
                }
                fired.push(time);
            }
        }
    }
    assert!(pending.is_empty(), "key {key}: timers {pending:?} never fired");
    fired
}

#[test]
fn timers_fire_once_in_order_never_before_the_watermark() {
    let mut fired_by_parallelism = Vec::new();
    let mut reports_by_parallelism = Vec::new();
    for parallelism in [1, 3] {
        let reports = run_probes(probes(), WatermarkStrategy::bounded(50), parallelism);
        let mut by_key: BTreeMap<u32, Vec<(u64, Seen)>> = BTreeMap::new();
        for (key, sequence, seen) in &reports {
            by_key.entry(*key).or_default().push((*sequence, seen.clone()));
        }
        let mut fired: Vec<(u32, i64)> = Vec::new();
        let (mut registrations, mut duplicates, mut past) = (0, 0, 0);
        for (key, history) in &mut by_key {
            history.sort_by_key(|(sequence, _)| *sequence);
            fired.extend(check_timer_history(*key, history).into_iter().map(|time| (*key, time)));
            let mut seen_times = BTreeSet::new();
            for (_, seen) in history.iter() {
                if let Seen::Registered { time, watermark } = seen {
                    registrations += 1;
                    duplicates += usize::from(!seen_times.insert(*time));
                    past += usize::from(*time <= *watermark);
                }
            }
        }
        // The input exercises what it should.
        assert!(duplicates > 20 && past > 20, "registrations {registrations}, duplicates {duplicates}, past {past}");
        let end_fires = reports
            .iter()
            .filter(|(_, _, seen)| matches!(seen, Seen::Fired { watermark, .. } if *watermark == WATERMARK_MAX))
            .count();
        assert!(end_fires > 0 && end_fires < fired.len(), "some timers fire during the run, some at its end");
        fired.sort();
        fired_by_parallelism.push(fired);
        // Without the watermark at firing (which depends on when a worker hears of progress),
        // each key's history is a function of the input alone.
        reports_by_parallelism.push(without_firing_watermark(&reports));
    }
    assert_eq!(fired_by_parallelism[0], fired_by_parallelism[1], "the fired timers differ between parallelism 1 and 3");
    assert_eq!(reports_by_parallelism[0], reports_by_parallelism[1]);
}

/// Without the watermark at firing, which depends on when a worker hears of progress.
fn without_firing_watermark(reports: &[(u32, u64, Seen)]) -> Vec<(u32, u64, Seen)> {
    let mut reports: Vec<(u32, u64, Seen)> = reports
        .iter()
        .map(|(key, sequence, seen)| match seen {
            Seen::Fired { time, .. } => (*key, *sequence, Seen::Fired { time: *time, watermark: 0 }),
            other => (*key, *sequence, other.clone()),
        })
        .collect();
    reports.sort();
    reports
}

#[test]
fn timers_fire_exactly_when_the_watermark_reaches_them() {
    let probe =
        |key: u32, register: Vec<i64>, past: Option<i64>, delete: Option<i64>| Probe { key, register, past, delete };
    // Monotonous watermarks: each element's stamp is the largest time before it, minus 1.
    let input = vec![
        (10, probe(1, vec![19, 20, 20], None, None)), // stamp -inf
        (20, probe(2, vec![40], None, None)),         // stamp 9
        (25, probe(2, vec![], None, Some(40))),       // stamp 19: key 1's timer 19 is due, 20 is not
        (30, probe(1, vec![], Some(0), None)),        // stamp 24: timer 20 is due; 24 is registered at the watermark
        (31, probe(2, vec![31], None, None)),         // stamp 29: key 1's timer 24 fires at the next watermark
    ];
    use Seen::*;
    let expected = vec![
        (1, 0, Element { watermark: WATERMARK_MIN }),
        (1, 1, Registered { time: 19, watermark: WATERMARK_MIN }),
        (1, 2, Registered { time: 20, watermark: WATERMARK_MIN }),
        (1, 3, Registered { time: 20, watermark: WATERMARK_MIN }), // coalesces with the one before
        (1, 4, Fired { time: 19, watermark: 19 }),
        (1, 5, Fired { time: 20, watermark: 24 }),
        (1, 6, Element { watermark: 24 }),
        (1, 7, Registered { time: 24, watermark: 24 }), // at the watermark: waits for the next one
        (1, 8, Fired { time: 24, watermark: 29 }),
        (2, 0, Element { watermark: 9 }),
        (2, 1, Registered { time: 40, watermark: 9 }),
        (2, 2, Element { watermark: 19 }),
        (2, 3, Deleted { time: 40 }), // never fires, not even at the end
        (2, 4, Element { watermark: 29 }),
        (2, 5, Registered { time: 31, watermark: 29 }),
        (2, 6, Fired { time: 31, watermark: WATERMARK_MAX }), // the last watermark before the end is 30
    ];
    // On one worker, the operator's watermark passes through every record's stamp.
    assert_eq!(run_probes(input.clone(), WatermarkStrategy::monotonous(), 1), expected);
    // On three, a worker may skip stamps of records it never sees: the watermark at firing may be
    // higher, everything else is the same, and the rules hold.
    let reports = run_probes(input, WatermarkStrategy::monotonous(), 3);
    assert_eq!(without_firing_watermark(&reports), without_firing_watermark(&expected));
    for key in [1, 2] {
        let history: Vec<(u64, Seen)> =
            reports.iter().filter(|(k, _, _)| *k == key).map(|(_, sequence, seen)| (*sequence, seen.clone())).collect();
        check_timer_history(key, &history);
    }
}

/// With event-time TTL a write counts from the later of the watermark and the element's time, so
/// state written before the first watermark lives `ttl` past its element, not until that watermark.
#[test]
fn event_time_ttl_counts_from_the_elements_time_before_the_first_watermark() {
    let value = ValueStateDescriptor::<i64>::new("value").with_ttl(StateTtl::event_time(500));
    let mut backend = KeyedStateBackend::<u32>::new(128);
    backend.register_value(&value);
    backend.set_current_key(1);
    backend.set_time(0, i64::MIN);
    backend.set_timestamp(1_000);
    backend.update(&value, 7);
    backend.set_time(0, 1_499);
    assert_eq!(backend.value(&value), Some(7), "1499 - 1000 < 500: still alive");
    backend.set_time(0, 1_500);
    assert_eq!(backend.value(&value), None, "1500 - 1000 >= 500: expired");
}
