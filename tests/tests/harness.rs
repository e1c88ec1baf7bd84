//! The test harness itself: it never migrates anything but a test's own database.

#[test]
fn a_test_database_url_is_derived_or_refused_never_the_admin_database() {
    let url =
        harness::url_with_db("postgres://postgres@127.0.0.1:5432/postgres", "t_abc").expect("url");
    assert_eq!(url, "postgres://postgres@127.0.0.1:5432/t_abc");
    for bad in [
        "host=127.0.0.1 user=postgres",
        "not a url",
        "mysql://127.0.0.1/x",
        "postgres:///postgres",
    ] {
        assert!(
            harness::url_with_db(bad, "t_abc").is_err(),
            "{bad} must be refused"
        );
    }
}
