//! The readers of users' files never panic on mutated input (a fixed count of executions of the
//! fuzzer that `cargo bench --bench fuzz_readers` runs for a fixed time).

#[path = "../bench/fuzz/mod.rs"]
mod fuzz;

#[test]
fn mutated_prompts_tables_jsonl_and_heads_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let r = fuzz::run(dir.path(), 7, |n| n < 3000);
    assert_eq!(r.executions, 3000);
    assert!(r.errors > 0, "the mutations produced no invalid input: {r:?}");
    assert!(r.panics.is_empty(), "panics: {:?}", r.panics);
}
