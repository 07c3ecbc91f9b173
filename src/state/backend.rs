//! The heap keyed-state backend: typed tables per state name, scoped to the current key and
//! namespace, snapshotted per key group.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hash};
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::key_group::{StableHasher, key_group};
use super::snapshot::{SnapshotError, SnapshotKind, decode, encode};
use crate::window::{AggregateFunction, Window};

/// What a state value may be: cloneable and serialisable.
pub trait StateData: Clone + Serialize + DeserializeOwned + 'static {}
impl<T: Clone + Serialize + DeserializeOwned + 'static> StateData for T {}

/// Which clock state time-to-live is measured on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TtlTime {
    /// The processing-time clock (Flink's only choice).
    ProcessingTime,
    /// The operator's watermark: state expires once the watermark is `ttl` past its last write.
    EventTime,
}

/// State time-to-live: an entry not written (or, with `refresh_on_read`, not read) for `ttl_ms`
/// is gone — never returned and removed when accessed (Flink's `NeverReturnExpired`). Expired
/// entries not accessed since may still be written to a snapshot; they stay invisible after a
/// restore, since their write time travels with them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateTtl {
    /// How long an entry lives after its last write.
    pub ttl_ms: i64,
    /// Which clock measures it.
    pub time: TtlTime,
    /// Whether reads also renew an entry (Flink's `OnReadAndWrite`); default: writes only.
    pub refresh_on_read: bool,
}

impl StateTtl {
    /// Entries live `ttl_ms` of processing time after their last write.
    pub fn processing_time(ttl_ms: i64) -> Self {
        assert!(ttl_ms > 0, "a state TTL must be positive");
        StateTtl { ttl_ms, time: TtlTime::ProcessingTime, refresh_on_read: false }
    }

    /// Entries live until the watermark is `ttl_ms` past their last write.
    pub fn event_time(ttl_ms: i64) -> Self {
        assert!(ttl_ms > 0, "a state TTL must be positive");
        StateTtl { ttl_ms, time: TtlTime::EventTime, refresh_on_read: false }
    }

    /// Reads renew entries too.
    pub fn refreshed_on_read(mut self) -> Self {
        self.refresh_on_read = true;
        self
    }
}

/// Names a piece of keyed state; the name is what snapshots are keyed by.
pub trait StateDescriptor {
    /// The state's name, unique within its operator.
    fn name(&self) -> &str;
    /// Its time-to-live, if any.
    fn ttl(&self) -> Option<StateTtl>;
}

macro_rules! descriptor {
    ($(#[$doc:meta])* $name:ident < $($param:ident),* > $(, $field:ident : $ty:ty)*) => {
        $(#[$doc])*
        pub struct $name<$($param),*> {
            name: String,
            ttl: Option<StateTtl>,
            $($field: $ty,)*
            marker: PhantomData<fn() -> ($($param,)*)>,
        }

        impl<$($param),*> StateDescriptor for $name<$($param),*> {
            fn name(&self) -> &str {
                &self.name
            }
            fn ttl(&self) -> Option<StateTtl> {
                self.ttl
            }
        }

        impl<$($param),*> $name<$($param),*> {
            /// Gives the state a time-to-live.
            pub fn with_ttl(mut self, ttl: StateTtl) -> Self {
                self.ttl = Some(ttl);
                self
            }
        }
    };
}

descriptor!(
    /// A single value per key (Flink's `ValueState`).
    ValueStateDescriptor<T>
);
descriptor!(
    /// A list per key (Flink's `ListState`).
    ListStateDescriptor<T>
);
descriptor!(
    /// A map per key, iterated in key order (Flink's `MapState`).
    MapStateDescriptor<UK, UV>
);
descriptor!(
    /// A value folded with a reduce function as elements are added (Flink's `ReducingState`).
    ReducingStateDescriptor<T>, reduce: Arc<dyn Fn(&T, &T) -> T + Send + Sync>
);
descriptor!(
    /// An accumulator of an [`AggregateFunction`] per key (Flink's `AggregatingState`).
    AggregatingStateDescriptor<IN, A>, function: Arc<A>
);

impl<T> ValueStateDescriptor<T> {
    /// Describes value state named `name`.
    pub fn new(name: &str) -> Self {
        ValueStateDescriptor { name: name.to_string(), ttl: None, marker: PhantomData }
    }
}

impl<T> ListStateDescriptor<T> {
    /// Describes list state named `name`.
    pub fn new(name: &str) -> Self {
        ListStateDescriptor { name: name.to_string(), ttl: None, marker: PhantomData }
    }
}

impl<UK, UV> MapStateDescriptor<UK, UV> {
    /// Describes map state named `name`.
    pub fn new(name: &str) -> Self {
        MapStateDescriptor { name: name.to_string(), ttl: None, marker: PhantomData }
    }
}

impl<T> ReducingStateDescriptor<T> {
    /// Describes reducing state named `name`, folded with `reduce`.
    pub fn new(name: &str, reduce: impl Fn(&T, &T) -> T + Send + Sync + 'static) -> Self {
        ReducingStateDescriptor { name: name.to_string(), ttl: None, reduce: Arc::new(reduce), marker: PhantomData }
    }
}

impl<IN, A: AggregateFunction<IN>> AggregatingStateDescriptor<IN, A> {
    /// Describes aggregating state named `name`, folded with `function`.
    pub fn new(name: &str, function: A) -> Self {
        AggregatingStateDescriptor {
            name: name.to_string(),
            ttl: None,
            function: Arc::new(function),
            marker: PhantomData,
        }
    }
}

/// A stored value with the time it was last renewed (for TTL).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Stamped<T> {
    value: T,
    renewed_ms: i64,
}

type Hasher = BuildHasherDefault<StableHasher>;

/// One state name's entries, by `(key, namespace)`.
struct Table<K, V> {
    entries: HashMap<(K, Window), V, Hasher>,
}

/// A table whose value type is known only to the code that registered it.
trait ErasedTable<K>: Any {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn len(&self) -> usize;
    /// Each key group's entries, sorted, encoded.
    fn snapshot(&self, max_parallelism: u32) -> BTreeMap<u32, Vec<u8>>;
    /// Decodes one key group's entries into a fresh table of the same type.
    fn decode_into(&self, fresh: &mut Option<Box<dyn ErasedTable<K>>>, bytes: &[u8]) -> Result<(), SnapshotError>;
    fn empty(&self) -> Box<dyn ErasedTable<K>>;
    fn remove_key(&mut self, key: &K, namespace: &Window);
    fn keys(&self) -> Vec<K>;
}

impl<K, V> ErasedTable<K> for Table<K, V>
where
    K: Hash + Ord + Clone + Serialize + DeserializeOwned + 'static,
    V: Clone + Serialize + DeserializeOwned + 'static,
{
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn snapshot(&self, max_parallelism: u32) -> BTreeMap<u32, Vec<u8>> {
        type Entries<'a, K, V> = Vec<(&'a (K, Window), &'a V)>;
        let mut groups: BTreeMap<u32, Entries<'_, K, V>> = BTreeMap::new();
        for entry in &self.entries {
            groups.entry(key_group(&entry.0.0, max_parallelism)).or_default().push(entry);
        }
        groups
            .into_iter()
            .map(|(group, mut entries)| {
                // Hash-map order must not reach the bytes: sort by key and namespace.
                entries.sort_by(|a, b| a.0.cmp(b.0));
                (group, bincode::serialize(&entries).expect("state serialises"))
            })
            .collect()
    }

    fn decode_into(&self, fresh: &mut Option<Box<dyn ErasedTable<K>>>, bytes: &[u8]) -> Result<(), SnapshotError> {
        let entries: Vec<((K, Window), V)> =
            bincode::deserialize(bytes).map_err(|e| SnapshotError::Decode(e.to_string()))?;
        let table = fresh.get_or_insert_with(|| self.empty());
        let table = table.as_any_mut().downcast_mut::<Table<K, V>>().expect("same type as its template");
        for (key, value) in entries {
            if table.entries.insert(key, value).is_some() {
                return Err(SnapshotError::Decode("a key appears in two snapshots".to_string()));
            }
        }
        Ok(())
    }

    fn empty(&self) -> Box<dyn ErasedTable<K>> {
        Box::new(Table::<K, V> { entries: HashMap::default() })
    }

    fn remove_key(&mut self, key: &K, namespace: &Window) {
        self.entries.remove(&(key.clone(), *namespace));
    }

    fn keys(&self) -> Vec<K> {
        let mut keys: Vec<K> = self.entries.keys().map(|(key, _)| key.clone()).collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// The payload of a keyed-state snapshot: per key group, per state name, the encoded entries.
#[derive(Serialize, Deserialize)]
struct KeyedSnapshot {
    max_parallelism: u32,
    groups: BTreeMap<u32, BTreeMap<String, Vec<u8>>>,
}

/// Keyed state of one operator instance (Flink's `HeapKeyedStateBackend`).
///
/// Set the current key (and, inside windows, the namespace) before reading or writing; every
/// access is scoped to it. Register every descriptor before restoring a snapshot, as Flink
/// operators do in `open`.
pub struct KeyedStateBackend<K> {
    max_parallelism: u32,
    tables: BTreeMap<String, Box<dyn ErasedTable<K>>>,
    current_key: Option<K>,
    namespace: Window,
    processing_time_ms: i64,
    watermark_ms: i64,
    timestamp_ms: i64,
}

impl<K> KeyedStateBackend<K>
where
    K: Hash + Ord + Clone + Serialize + DeserializeOwned + 'static,
{
    /// An empty backend for a job with `max_parallelism` key groups.
    pub fn new(max_parallelism: u32) -> Self {
        KeyedStateBackend {
            max_parallelism,
            tables: BTreeMap::new(),
            current_key: None,
            namespace: Window::GLOBAL,
            processing_time_ms: 0,
            watermark_ms: i64::MIN,
            timestamp_ms: i64::MIN,
        }
    }

    /// The number of key groups.
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// Scopes every access to `key`, in the global namespace.
    pub fn set_current_key(&mut self, key: K) {
        self.current_key = Some(key);
        self.namespace = Window::GLOBAL;
    }

    /// The current key.
    pub fn current_key(&self) -> Option<&K> {
        self.current_key.as_ref()
    }

    /// Scopes every access to `namespace` of the current key (window state).
    pub fn set_namespace(&mut self, namespace: Window) {
        self.namespace = namespace;
    }

    /// Tells the backend the time, for TTL.
    pub fn set_time(&mut self, processing_time_ms: i64, watermark_ms: i64) {
        self.processing_time_ms = processing_time_ms;
        self.watermark_ms = watermark_ms;
    }

    /// Tells the backend the event time of the element (or timer) being processed: with
    /// event-time TTL, a write lives until the watermark is `ttl` past the later of this and the
    /// watermark (so state written before the first watermark does not expire at once).
    pub fn set_timestamp(&mut self, timestamp_ms: i64) {
        self.timestamp_ms = timestamp_ms;
    }

    /// The time an entry is checked against.
    fn now(&self, ttl: &StateTtl) -> i64 {
        match ttl.time {
            TtlTime::ProcessingTime => self.processing_time_ms,
            TtlTime::EventTime => self.watermark_ms,
        }
    }

    /// The time a write (or a renewing read) stamps an entry with.
    fn stamp(&self, ttl: Option<StateTtl>) -> i64 {
        ttl.map_or(0, |ttl| match ttl.time {
            TtlTime::ProcessingTime => self.processing_time_ms,
            TtlTime::EventTime => self.watermark_ms.max(self.timestamp_ms),
        })
    }

    fn expired(&self, ttl: Option<StateTtl>, renewed_ms: i64) -> bool {
        ttl.is_some_and(|ttl| self.now(&ttl).saturating_sub(renewed_ms) >= ttl.ttl_ms)
    }

    fn scope(&self) -> (K, Window) {
        let key = self.current_key.clone().expect("keyed state is used only with a current key");
        (key, self.namespace)
    }

    fn table<V: StateData>(&mut self, name: &str) -> &mut Table<K, V> {
        if !self.tables.contains_key(name) {
            self.tables.insert(name.to_string(), Box::new(Table::<K, V> { entries: HashMap::default() }));
        }
        let table = self.tables.get_mut(name).expect("inserted above");
        table
            .as_any_mut()
            .downcast_mut::<Table<K, V>>()
            .unwrap_or_else(|| panic!("state {name:?} is used with two different types"))
    }

    /// Declares a state so that a snapshot can be restored into it.
    pub fn register_value<T: StateData>(&mut self, descriptor: &ValueStateDescriptor<T>) {
        self.table::<Stamped<T>>(descriptor.name());
    }

    /// Declares a list state.
    pub fn register_list<T: StateData>(&mut self, descriptor: &ListStateDescriptor<T>) {
        self.table::<Vec<Stamped<T>>>(descriptor.name());
    }

    /// Declares a map state.
    pub fn register_map<UK: StateData + Ord, UV: StateData>(&mut self, descriptor: &MapStateDescriptor<UK, UV>) {
        self.table::<BTreeMap<UK, Stamped<UV>>>(descriptor.name());
    }

    /// Declares a reducing state.
    pub fn register_reducing<T: StateData>(&mut self, descriptor: &ReducingStateDescriptor<T>) {
        self.table::<Stamped<T>>(descriptor.name());
    }

    /// Declares an aggregating state.
    pub fn register_aggregating<IN, A>(&mut self, descriptor: &AggregatingStateDescriptor<IN, A>)
    where
        A: AggregateFunction<IN>,
        A::Accumulator: StateData,
    {
        self.table::<Stamped<A::Accumulator>>(descriptor.name());
    }

    fn read_stamped<T: StateData>(&mut self, name: &str, ttl: Option<StateTtl>) -> Option<T> {
        let scope = self.scope();
        let now = self.stamp(ttl);
        let renewed = self.table::<Stamped<T>>(name).entries.get(&scope).map(|s| s.renewed_ms)?;
        if self.expired(ttl, renewed) {
            self.table::<Stamped<T>>(name).entries.remove(&scope);
            return None;
        }
        let refresh = ttl.is_some_and(|ttl| ttl.refresh_on_read);
        let entry = self.table::<Stamped<T>>(name).entries.get_mut(&scope).expect("present above");
        if refresh {
            entry.renewed_ms = now;
        }
        Some(entry.value.clone())
    }

    fn write_stamped<T: StateData>(&mut self, name: &str, ttl: Option<StateTtl>, value: T) {
        let scope = self.scope();
        let renewed_ms = self.stamp(ttl);
        self.table::<Stamped<T>>(name).entries.insert(scope, Stamped { value, renewed_ms });
    }

    /// The current key's value.
    pub fn value<T: StateData>(&mut self, descriptor: &ValueStateDescriptor<T>) -> Option<T> {
        self.read_stamped(descriptor.name(), descriptor.ttl())
    }

    /// Sets the current key's value.
    pub fn update<T: StateData>(&mut self, descriptor: &ValueStateDescriptor<T>, value: T) {
        self.write_stamped(descriptor.name(), descriptor.ttl(), value);
    }

    /// Removes the current key's entry of any state.
    pub fn clear(&mut self, descriptor: &impl StateDescriptor) {
        let (key, namespace) = self.scope();
        if let Some(table) = self.tables.get_mut(descriptor.name()) {
            table.remove_key(&key, &namespace);
        }
    }

    /// The current key's list (empty if none), without expired elements.
    pub fn list<T: StateData>(&mut self, descriptor: &ListStateDescriptor<T>) -> Vec<T> {
        let scope = self.scope();
        let ttl = descriptor.ttl();
        let now = self.stamp(ttl);
        let (expired_after, refresh) = (ttl, ttl.is_some_and(|ttl| ttl.refresh_on_read));
        let live: Vec<Stamped<T>> = {
            let Some(list) = self.table::<Vec<Stamped<T>>>(descriptor.name()).entries.get(&scope).cloned() else {
                return Vec::new();
            };
            list.into_iter().filter(|element| !self.expired(expired_after, element.renewed_ms)).collect()
        };
        let values = live.iter().map(|element| element.value.clone()).collect();
        let table = self.table::<Vec<Stamped<T>>>(descriptor.name());
        if live.is_empty() {
            table.entries.remove(&scope);
        } else {
            let renewed = if refresh {
                live.into_iter().map(|element| Stamped { renewed_ms: now, ..element }).collect()
            } else {
                live
            };
            table.entries.insert(scope, renewed);
        }
        values
    }

    /// Appends to the current key's list.
    pub fn list_add<T: StateData>(&mut self, descriptor: &ListStateDescriptor<T>, value: T) {
        let scope = self.scope();
        let renewed_ms = self.stamp(descriptor.ttl());
        self.table::<Vec<Stamped<T>>>(descriptor.name())
            .entries
            .entry(scope)
            .or_default()
            .push(Stamped { value, renewed_ms });
    }

    /// Replaces the current key's list.
    pub fn list_update<T: StateData>(&mut self, descriptor: &ListStateDescriptor<T>, values: Vec<T>) {
        let scope = self.scope();
        let renewed_ms = self.stamp(descriptor.ttl());
        let table = self.table::<Vec<Stamped<T>>>(descriptor.name());
        if values.is_empty() {
            table.entries.remove(&scope);
        } else {
            table.entries.insert(scope, values.into_iter().map(|value| Stamped { value, renewed_ms }).collect());
        }
    }

    fn live_map<UK: StateData + Ord, UV: StateData>(
        &mut self,
        descriptor: &MapStateDescriptor<UK, UV>,
    ) -> Option<&mut BTreeMap<UK, Stamped<UV>>> {
        let scope = self.scope();
        let ttl = descriptor.ttl();
        if ttl.is_some() {
            let now = self.stamp(ttl);
            let ttl_ms = ttl.map_or(0, |t| t.ttl_ms);
            let table = self.table::<BTreeMap<UK, Stamped<UV>>>(descriptor.name());
            if let Some(map) = table.entries.get_mut(&scope) {
                map.retain(|_, entry| now.saturating_sub(entry.renewed_ms) < ttl_ms);
                if map.is_empty() {
                    table.entries.remove(&scope);
                }
            }
        }
        self.table::<BTreeMap<UK, Stamped<UV>>>(descriptor.name()).entries.get_mut(&scope)
    }

    /// The current key's value for `user_key`.
    pub fn map_get<UK: StateData + Ord, UV: StateData>(
        &mut self,
        descriptor: &MapStateDescriptor<UK, UV>,
        user_key: &UK,
    ) -> Option<UV> {
        let now = self.stamp(descriptor.ttl());
        let refresh = descriptor.ttl().is_some_and(|ttl| ttl.refresh_on_read);
        let entry = self.live_map(descriptor)?.get_mut(user_key)?;
        if refresh {
            entry.renewed_ms = now;
        }
        Some(entry.value.clone())
    }

    /// Sets the current key's value for `user_key`.
    pub fn map_put<UK: StateData + Ord, UV: StateData>(
        &mut self,
        descriptor: &MapStateDescriptor<UK, UV>,
        user_key: UK,
        value: UV,
    ) {
        let scope = self.scope();
        let renewed_ms = self.stamp(descriptor.ttl());
        self.table::<BTreeMap<UK, Stamped<UV>>>(descriptor.name())
            .entries
            .entry(scope)
            .or_default()
            .insert(user_key, Stamped { value, renewed_ms });
    }

    /// Removes `user_key` from the current key's map.
    pub fn map_remove<UK: StateData + Ord, UV: StateData>(
        &mut self,
        descriptor: &MapStateDescriptor<UK, UV>,
        user_key: &UK,
    ) {
        let scope = self.scope();
        let table = self.table::<BTreeMap<UK, Stamped<UV>>>(descriptor.name());
        if let Some(map) = table.entries.get_mut(&scope) {
            map.remove(user_key);
            if map.is_empty() {
                table.entries.remove(&scope);
            }
        }
    }

    /// The current key's map entries, in user-key order.
    pub fn map_entries<UK: StateData + Ord, UV: StateData>(
        &mut self,
        descriptor: &MapStateDescriptor<UK, UV>,
    ) -> Vec<(UK, UV)> {
        let now = self.stamp(descriptor.ttl());
        let refresh = descriptor.ttl().is_some_and(|ttl| ttl.refresh_on_read);
        let Some(map) = self.live_map(descriptor) else { return Vec::new() };
        map.iter_mut()
            .map(|(k, v)| {
                if refresh {
                    v.renewed_ms = now;
                }
                (k.clone(), v.value.clone())
            })
            .collect()
    }

    /// Folds `value` into the current key's reducing state.
    pub fn reduce_add<T: StateData>(&mut self, descriptor: &ReducingStateDescriptor<T>, value: T) {
        let reduced = match self.read_stamped::<T>(descriptor.name(), descriptor.ttl()) {
            Some(current) => (descriptor.reduce)(&current, &value),
            None => value,
        };
        self.write_stamped(descriptor.name(), descriptor.ttl(), reduced);
    }

    /// The current key's reduced value.
    pub fn reduce_get<T: StateData>(&mut self, descriptor: &ReducingStateDescriptor<T>) -> Option<T> {
        self.read_stamped(descriptor.name(), descriptor.ttl())
    }

    /// Folds `value` into the current key's accumulator.
    pub fn aggregate_add<IN, A>(&mut self, descriptor: &AggregatingStateDescriptor<IN, A>, value: &IN)
    where
        A: AggregateFunction<IN>,
        A::Accumulator: StateData,
    {
        let mut accumulator = self
            .read_stamped::<A::Accumulator>(descriptor.name(), descriptor.ttl())
            .unwrap_or_else(|| descriptor.function.create_accumulator());
        descriptor.function.add(&mut accumulator, value);
        self.write_stamped(descriptor.name(), descriptor.ttl(), accumulator);
    }

    /// The current key's aggregate result.
    pub fn aggregate_get<IN, A>(&mut self, descriptor: &AggregatingStateDescriptor<IN, A>) -> Option<A::Output>
    where
        A: AggregateFunction<IN>,
        A::Accumulator: StateData,
    {
        let accumulator = self.read_stamped::<A::Accumulator>(descriptor.name(), descriptor.ttl())?;
        Some(descriptor.function.result(&accumulator))
    }

    /// Every key with an entry in `descriptor`'s state, in key order (Flink's
    /// `applyToKeyedState` iterates these).
    pub fn keys(&self, descriptor: &impl StateDescriptor) -> Vec<K> {
        self.tables.get(descriptor.name()).map(|table| table.keys()).unwrap_or_default()
    }

    /// How many `(key, namespace)` entries every state holds together.
    pub fn entry_count(&self) -> usize {
        self.tables.values().map(|table| table.len()).sum()
    }

    /// Snapshots every state, grouped by key group: versioned, checksummed bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut groups: BTreeMap<u32, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
        for (name, table) in &self.tables {
            for (group, bytes) in table.snapshot(self.max_parallelism) {
                groups.entry(group).or_default().insert(name.clone(), bytes);
            }
        }
        encode(SnapshotKind::KeyedState, &KeyedSnapshot { max_parallelism: self.max_parallelism, groups })
    }

    /// Restores the key groups in `key_groups` from `snapshots` (those of every old worker: a
    /// snapshot taken with N workers restores on M). Everything is decoded before anything is
    /// replaced: on error the backend is unchanged.
    pub fn restore(&mut self, snapshots: &[Vec<u8>], key_groups: std::ops::Range<u32>) -> Result<(), SnapshotError> {
        let mut fresh: BTreeMap<String, Option<Box<dyn ErasedTable<K>>>> =
            self.tables.keys().map(|name| (name.clone(), None)).collect();
        for bytes in snapshots {
            let snapshot: KeyedSnapshot = decode(SnapshotKind::KeyedState, bytes)?;
            if snapshot.max_parallelism != self.max_parallelism {
                return Err(SnapshotError::Decode(format!(
                    "snapshot has {} key groups, the job {}: max parallelism cannot change",
                    snapshot.max_parallelism, self.max_parallelism
                )));
            }
            for (group, states) in snapshot.groups.range(key_groups.clone()) {
                for (name, bytes) in states {
                    let template = self.tables.get(name).ok_or_else(|| {
                        SnapshotError::Decode(format!(
                            "snapshot holds state {name:?} that the operator does not declare"
                        ))
                    })?;
                    template
                        .decode_into(fresh.get_mut(name).expect("one per table"), bytes)
                        .map_err(|e| SnapshotError::Decode(format!("state {name:?}, key group {group}: {e}")))?;
                }
            }
        }
        for (name, table) in fresh {
            let template = self.tables.get(&name).expect("one per table");
            let table = table.unwrap_or_else(|| template.empty());
            self.tables.insert(name, table);
        }
        Ok(())
    }
}
