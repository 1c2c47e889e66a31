//! The pprof protobuf messages (`perftools.profiles`, Google's `proto/profile.proto`), written by
//! hand as prost messages so no `protoc` is needed at build time.
//!
//! Field numbers follow `profile.proto`; every field pprof readers use is present. String fields
//! are indices into [`Profile::string_table`], whose entry 0 is always `""`; ids are ≥ 1 and 0
//! means "none".

/// A whole profile: samples plus the tables they refer to.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    /// What each entry of [`Sample::value`] measures, e.g. `[cpu/nanoseconds]`.
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    /// The samples.
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    /// The mapped files the locations belong to.
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    /// The sampled addresses.
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    /// The functions the locations' lines refer to.
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    /// Every string of the profile; entry 0 must be `""`.
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    /// Regexp (string index) of frames to drop from stacks, 0 for none.
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    /// Regexp (string index) of frames to keep despite `drop_frames`, 0 for none.
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    /// Wall-clock time the profile was collected at, in nanoseconds since the Unix epoch.
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    /// Length of the collection window in nanoseconds.
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    /// What one sampling event measures, e.g. cpu/nanoseconds.
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    /// Distance between two sampling events, in `period_type` units.
    #[prost(int64, tag = "12")]
    pub period: i64,
    /// Free-form comments (string indices).
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    /// The sample type (string index) readers show by default, 0 for the last one.
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

/// A measured quantity: a type and its unit, e.g. cpu/nanoseconds.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct ValueType {
    /// The quantity (string index), e.g. `cpu`.
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    /// The unit (string index), e.g. `nanoseconds`.
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// One stack with its values and labels.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Location ids of the stack, leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    /// One value per [`Profile::sample_type`].
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    /// Extra dimensions of the sample (pid, comm, …).
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

/// A key with either a string or a numeric value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct Label {
    /// The key (string index).
    #[prost(int64, tag = "1")]
    pub key: i64,
    /// The string value (string index), 0 for a numeric label.
    #[prost(int64, tag = "2")]
    pub str: i64,
    /// The numeric value, when `str` is 0.
    #[prost(int64, tag = "3")]
    pub num: i64,
    /// The unit of `num` (string index), 0 for none.
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

/// A mapped file.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Mapping {
    /// Unique id, ≥ 1.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// First address of the mapping.
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    /// First address past the end of the mapping.
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    /// Offset in the file of the byte mapped at `memory_start`.
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    /// The file's path (string index).
    #[prost(int64, tag = "5")]
    pub filename: i64,
    /// The file's build id (string index), 0 when unknown.
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    /// Every location of this mapping has function names.
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    /// Every line of this mapping's locations has a file name.
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    /// Every line of this mapping's locations has a line number.
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    /// Inlined frames of this mapping's locations were resolved.
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

/// One sampled address.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Location {
    /// Unique id, ≥ 1.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// The mapping holding the address, 0 when unknown.
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    /// The absolute instruction address.
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// The source lines of the address: inlined functions first (innermost first), the
    /// physical function last. Empty when not symbolized.
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    /// Several call frames were folded into this location.
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

/// A function and a position inside it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct Line {
    /// The function's id.
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    /// Source line, 0 when unknown.
    #[prost(int64, tag = "2")]
    pub line: i64,
    /// Source column, 0 when unknown.
    #[prost(int64, tag = "3")]
    pub column: i64,
}

/// A function.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct Function {
    /// Unique id, ≥ 1.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Human-readable name (string index).
    #[prost(int64, tag = "2")]
    pub name: i64,
    /// Name as it appears in the binary, e.g. mangled (string index).
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    /// Source file (string index), 0 when unknown.
    #[prost(int64, tag = "4")]
    pub filename: i64,
    /// Line the function starts at, 0 when unknown.
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}
