//! Outside local mode, `closeio-worker` refuses to start without a real `ENCRYPTION_KEY` and without
//! `HULL_ORGANIZATIONS`, and says which variable is wrong.

#[path = "../../common/tests/support/binary.rs"]
mod binary;

#[test]
fn an_unsafe_configuration_stops_it_naming_the_variable() {
    binary::refuses_unsafe_configuration(env!("CARGO_BIN_EXE_closeio-worker"));
}
