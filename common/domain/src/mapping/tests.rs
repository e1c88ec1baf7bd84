//! Table-driven tests of the mapping module against the original connector's behaviour.

use serde_json::{json, Map, Value};

use super::*;

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(map) => map,
        other => panic!("test fixture must be an object, got {other}"),
    }
}

fn settings(v: Value) -> Settings {
    Settings::from_private_settings(&v).expect("test settings must be valid")
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn fm(hull: &str, close: &str) -> FieldMapping {
    FieldMapping {
        hull_field_name: hull.to_owned(),
        closeio_field_name: close.to_owned(),
    }
}

fn meta() -> CloseMetadata {
    CloseMetadata {
        lead_statuses: vec![
            LeadStatus {
                id: "stat_potential".into(),
                label: "Potential".into(),
            },
            LeadStatus {
                id: "stat_won".into(),
                label: "Won".into(),
            },
        ],
        lead_custom_fields: vec![
            CustomField {
                id: "lcf_ftes".into(),
                name: "FTEs".into(),
                field_type: "number".into(),
            },
            CustomField {
                id: "lcf_users".into(),
                name: "# of users".into(),
                field_type: "number".into(),
            },
            CustomField {
                id: "lcf_receipt".into(),
                name: "eReceipt".into(),
                field_type: "text".into(),
            },
        ],
        contact_custom_fields: vec![CustomField {
            id: "ccf_ok".into(),
            name: "ContactOK".into(),
            field_type: "choices".into(),
        }],
    }
}

fn set(v: Value) -> Value {
    json!({"value": v, "operation": "set"})
}

fn set_if_null(v: Value) -> Value {
    json!({"value": v, "operation": "setIfNull"})
}

// ---------------------------------------------------------------- settings

#[test]
fn settings_normalisation() {
    struct Case {
        name: &'static str,
        input: Value,
        ident_hull: Option<&'static str>,
        ident_service: Option<&'static str>,
        status: LeadStatusSetting,
        outbound: Vec<FieldMapping>,
        inbound: Vec<&'static str>,
    }
    let cases = vec![
        Case {
            name: "empty object: all defaults",
            input: json!({}),
            ident_hull: Some("domain"),
            ident_service: Some("url"),
            status: LeadStatusSetting::NotSent,
            outbound: vec![fm("domain", "url")],
            inbound: vec!["url"],
        },
        Case {
            name: "stored nulls are kept, no implicit mapping",
            input: json!({"lead_identifier_hull": null, "lead_identifier_service": null, "lead_status": null}),
            ident_hull: None,
            ident_service: None,
            status: LeadStatusSetting::NotSent,
            outbound: vec![],
            inbound: vec![],
        },
        Case {
            name: "stored empty strings are kept",
            input: json!({"lead_identifier_hull": "", "lead_identifier_service": "", "lead_status": ""}),
            ident_hull: Some(""),
            ident_service: Some(""),
            status: LeadStatusSetting::NotSent,
            outbound: vec![fm("", "")],
            inbound: vec![""],
        },
        Case {
            name: "hull-default means no status",
            input: json!({"lead_status": "hull-default"}),
            ident_hull: Some("domain"),
            ident_service: Some("url"),
            status: LeadStatusSetting::NotSent,
            outbound: vec![fm("domain", "url")],
            inbound: vec!["url"],
        },
        Case {
            name: "N/A means no status",
            input: json!({"lead_status": "N/A"}),
            ident_hull: Some("domain"),
            ident_service: Some("url"),
            status: LeadStatusSetting::NotSent,
            outbound: vec![fm("domain", "url")],
            inbound: vec!["url"],
        },
        Case {
            name: "real status and external_id identifier into a custom field",
            input: json!({
                "lead_status": "stat_potential",
                "lead_identifier_hull": "external_id",
                "lead_identifier_service": "custom.lcf_ext",
                "lead_attributes_outbound": [{"hull_field_name": "name", "closeio_field_name": "name"}],
                "lead_attributes_inbound": ["name"]
            }),
            ident_hull: Some("external_id"),
            ident_service: Some("custom.lcf_ext"),
            status: LeadStatusSetting::StatusId("stat_potential".into()),
            outbound: vec![fm("name", "name"), fm("external_id", "custom.lcf_ext")],
            inbound: vec!["name", "custom.lcf_ext"],
        },
        Case {
            name: "implicit mapping and inbound field not duplicated",
            input: json!({
                "lead_attributes_outbound": [
                    {"hull_field_name": "domain", "closeio_field_name": "url"},
                    {"hull_field_name": "name", "closeio_field_name": "name"}
                ],
                "lead_attributes_inbound": ["url", "name"]
            }),
            ident_hull: Some("domain"),
            ident_service: Some("url"),
            status: LeadStatusSetting::NotSent,
            outbound: vec![fm("domain", "url"), fm("name", "name")],
            inbound: vec!["url", "name"],
        },
        Case {
            name: "a different pair to the same field still gets the implicit mapping",
            input: json!({
                "lead_attributes_outbound": [{"hull_field_name": "website", "closeio_field_name": "url"}]
            }),
            ident_hull: Some("domain"),
            ident_service: Some("url"),
            status: LeadStatusSetting::NotSent,
            outbound: vec![fm("website", "url"), fm("domain", "url")],
            inbound: vec!["url"],
        },
        Case {
            name: "incomplete mapping rows are dropped",
            input: json!({
                "lead_attributes_outbound": [{}, {"hull_field_name": "name"}, null, {"hull_field_name": "", "closeio_field_name": "name"}]
            }),
            ident_hull: Some("domain"),
            ident_service: Some("url"),
            status: LeadStatusSetting::NotSent,
            outbound: vec![fm("domain", "url")],
            inbound: vec!["url"],
        },
    ];
    for case in cases {
        let s = settings(case.input);
        assert_eq!(
            s.lead_identifier_hull.as_deref(),
            case.ident_hull,
            "{}",
            case.name
        );
        assert_eq!(
            s.lead_identifier_service.as_deref(),
            case.ident_service,
            "{}",
            case.name
        );
        assert_eq!(s.lead_status, case.status, "{}", case.name);
        assert_eq!(s.lead_attributes_outbound, case.outbound, "{}", case.name);
        assert_eq!(
            s.lead_attributes_inbound,
            ids(&case.inbound),
            "{}",
            case.name
        );
    }
}

#[test]
fn settings_lists_and_new_options() {
    let s = settings(json!({
        "api_key": "abcdef",
        "synchronized_account_segments": ["s1", null, "s2"],
        "synchronized_user_segments": [],
        "contact_attributes_outbound": [{}, {"hull_field_name": "email", "closeio_field_name": "emails.office"}],
        "contact_attributes_inbound": ["emails", "title"],
        "sync_opportunities": true,
        "fetch_interval_minutes": "15",
        "last_sync_at": 1532000000,
        "synchronized_segments": ["legacy"]
    }));
    assert_eq!(s.api_key.as_deref(), Some("abcdef"));
    assert_eq!(s.synchronized_account_segments, ids(&["s1", "s2"]));
    assert_eq!(s.synchronized_user_segments, Some(vec![]));
    assert_eq!(
        s.contact_attributes_outbound,
        vec![fm("email", "emails.office")]
    );
    assert_eq!(s.contact_attributes_inbound, ids(&["emails", "title"]));
    assert!(s.sync_opportunities);
    assert_eq!(s.fetch_interval_minutes, Some(15));

    let defaults = settings(json!({"synchronized_account_segments": null}));
    assert_eq!(defaults.api_key, None);
    assert!(defaults.synchronized_account_segments.is_empty());
    assert_eq!(defaults.synchronized_user_segments, None);
    assert!(defaults.contact_attributes_outbound.is_empty());
    assert!(defaults.contact_attributes_inbound.is_empty());
    assert!(!defaults.sync_opportunities);
    assert_eq!(defaults.fetch_interval_minutes, None);

    let numeric = settings(json!({"fetch_interval_minutes": 60}));
    assert_eq!(numeric.fetch_interval_minutes, Some(60));
}

#[test]
fn settings_api_key_validity() {
    let cases = [
        (json!({}), false),
        (json!({"api_key": null}), false),
        (json!({"api_key": 123456}), false),
        (json!({"api_key": ""}), false),
        (json!({"api_key": "12345"}), false),
        (json!({"api_key": "123456"}), true),
        (json!({"api_key": "api_7yDcbd2fPbwwW4ljM3GlMv"}), true),
    ];
    for (input, valid) in cases {
        assert_eq!(
            settings(input.clone()).has_valid_api_key(),
            valid,
            "{input}"
        );
    }
    let debug = format!("{:?}", settings(json!({"api_key": "api_secret_value"})));
    assert!(!debug.contains("api_secret_value"), "{debug}");
}

#[test]
fn settings_wrong_types_are_clear_errors() {
    let cases = [
        (json!(null), "private_settings must be an object, got null"),
        (
            json!([]),
            "private_settings must be an object, got an array",
        ),
        (
            json!({"synchronized_account_segments": "seg"}),
            "synchronized_account_segments must be an array of strings, got a string",
        ),
        (
            json!({"synchronized_account_segments": ["a", 1]}),
            "synchronized_account_segments[1] must be a string, got a number",
        ),
        (
            json!({"synchronized_user_segments": {}}),
            "synchronized_user_segments must be an array of strings, got an object",
        ),
        (
            json!({"lead_status": 3}),
            "lead_status must be a string, got a number",
        ),
        (
            json!({"lead_identifier_hull": true}),
            "lead_identifier_hull must be a string, got a boolean",
        ),
        (
            json!({"lead_identifier_service": ["url"]}),
            "lead_identifier_service must be a string, got an array",
        ),
        (
            json!({"lead_attributes_outbound": {"a": 1}}),
            "lead_attributes_outbound must be an array of mappings, got an object",
        ),
        (
            json!({"lead_attributes_outbound": [
                {"hull_field_name": "a", "closeio_field_name": "name"},
                {"hull_field_name": "b", "closeio_field_name": "url"},
                {"hull_field_name": "c", "closeio_field_name": 7}
            ]}),
            "lead_attributes_outbound[2].closeio_field_name must be a string, got a number",
        ),
        (
            json!({"contact_attributes_outbound": ["email"]}),
            "contact_attributes_outbound[0] must be an object, got a string",
        ),
        (
            json!({"contact_attributes_outbound": [{"hull_field_name": {}, "closeio_field_name": "name"}]}),
            "contact_attributes_outbound[0].hull_field_name must be a string, got an object",
        ),
        (
            json!({"lead_attributes_inbound": "name"}),
            "lead_attributes_inbound must be an array of strings, got a string",
        ),
        (
            json!({"contact_attributes_inbound": [false]}),
            "contact_attributes_inbound[0] must be a string, got a boolean",
        ),
        (
            json!({"sync_opportunities": "yes"}),
            "sync_opportunities must be a boolean, got a string",
        ),
        (
            json!({"fetch_interval_minutes": 0}),
            "fetch_interval_minutes must be at least 1",
        ),
        (
            json!({"fetch_interval_minutes": "soon"}),
            "fetch_interval_minutes must be a positive integer",
        ),
        (
            json!({"fetch_interval_minutes": -5}),
            "fetch_interval_minutes must be a positive integer",
        ),
        (
            json!({"fetch_interval_minutes": true}),
            "fetch_interval_minutes must be a positive integer, got a boolean",
        ),
    ];
    for (input, expected) in cases {
        match Settings::from_private_settings(&input) {
            Ok(s) => panic!("{input} should fail, got {s:?}"),
            Err(e) => assert_eq!(e.to_string(), expected, "{input}"),
        }
    }
}

// ---------------------------------------------------------------- filters

#[test]
fn skip_reason_messages_are_exact() {
    let cases = [
        (
            SkipReason::AccountNoIdentValue {
                attr: "domain".into(),
            },
            "The Hull account has no value for the unique identifier attribute 'domain'",
        ),
        (
            SkipReason::AccountNotInSegments,
            "The Hull account is not part of any whitelisted segment and won't be synchronized with close.io.",
        ),
        (
            SkipReason::UserNoAccount,
            "The Hull user is not linked to an account; cannot create a contact in close.io without a lead.",
        ),
        (
            SkipReason::UserAccountNotInSegments,
            "The linked Hull account is not part of any whitelisted segment, the user won't be synchronized as contact to close.io.",
        ),
        (
            SkipReason::UserNotInUserSegments,
            "The Hull user is not part of any whitelisted user segment and won't be synchronized as contact to close.io.",
        ),
        (
            SkipReason::UserAccountNoIdentValue {
                attr: "external_id".into(),
            },
            "The linked Hull account has no value for the unique identifier attribute 'external_id', the user won't be synchronized as contact to close.io.",
        ),
        (
            SkipReason::EchoOnly,
            "The only changes are close.io attributes written by this connector; nothing to send to close.io.",
        ),
    ];
    for (reason, expected) in cases {
        assert_eq!(reason.message(), expected);
        assert_eq!(reason.to_string(), expected);
        assert!(reason.id().starts_with("OperationSkip"));
    }
}

#[test]
fn filter_account_table() {
    let s = settings(json!({"synchronized_account_segments": ["seg_a"]}));
    let s_ext = settings(json!({
        "synchronized_account_segments": ["seg_a"],
        "lead_identifier_hull": "external_id"
    }));
    let s_null_ident = settings(json!({
        "synchronized_account_segments": ["seg_a"],
        "lead_identifier_hull": null
    }));
    let no_ident = |attr: &str| {
        Err(SkipReason::AccountNoIdentValue {
            attr: attr.to_owned(),
        })
    };
    type Case<'a> = (
        &'a str,
        &'a Settings,
        Value,
        Vec<String>,
        bool,
        Result<(), SkipReason>,
    );
    let cases: Vec<Case> = vec![
        (
            "whitelisted with domain",
            &s,
            json!({"domain": "a.com"}),
            ids(&["seg_a"]),
            false,
            Ok(()),
        ),
        (
            "one of several segments",
            &s,
            json!({"domain": "a.com"}),
            ids(&["x", "seg_a"]),
            false,
            Ok(()),
        ),
        (
            "no domain",
            &s,
            json!({"name": "A"}),
            ids(&["seg_a"]),
            false,
            no_ident("domain"),
        ),
        (
            "null domain",
            &s,
            json!({"domain": null}),
            ids(&["seg_a"]),
            false,
            no_ident("domain"),
        ),
        (
            "identifier checked before segments",
            &s,
            json!({}),
            vec![],
            false,
            no_ident("domain"),
        ),
        (
            "empty string domain is a value",
            &s,
            json!({"domain": ""}),
            ids(&["seg_a"]),
            false,
            Ok(()),
        ),
        (
            "not whitelisted",
            &s,
            json!({"domain": "a.com"}),
            ids(&["seg_b"]),
            false,
            Err(SkipReason::AccountNotInSegments),
        ),
        (
            "no segments",
            &s,
            json!({"domain": "a.com"}),
            vec![],
            false,
            Err(SkipReason::AccountNotInSegments),
        ),
        (
            "export bypasses segments",
            &s,
            json!({"domain": "a.com"}),
            vec![],
            true,
            Ok(()),
        ),
        (
            "export keeps identifier check",
            &s,
            json!({}),
            vec![],
            true,
            no_ident("domain"),
        ),
        (
            "external_id identifier",
            &s_ext,
            json!({"domain": "a.com"}),
            ids(&["seg_a"]),
            false,
            no_ident("external_id"),
        ),
        (
            "external_id present",
            &s_ext,
            json!({"external_id": 42}),
            ids(&["seg_a"]),
            false,
            Ok(()),
        ),
        (
            "null identifier setting",
            &s_null_ident,
            json!({"domain": "a.com"}),
            ids(&["seg_a"]),
            false,
            no_ident("null"),
        ),
    ];
    for (name, s, account, segments, is_export, expected) in cases {
        assert_eq!(
            filter_account(s, &obj(account), &segments, is_export),
            expected,
            "{name}"
        );
    }
}

#[test]
fn filter_user_table() {
    let s = settings(json!({"synchronized_account_segments": ["seg_a"]}));
    let s_users = settings(json!({
        "synchronized_account_segments": ["seg_a"],
        "synchronized_user_segments": ["useg"]
    }));
    let s_users_empty = settings(json!({
        "synchronized_account_segments": ["seg_a"],
        "synchronized_user_segments": []
    }));
    let linked = json!({"domain": "a.com", "closeio/id": "lead_1"});
    let unlinked = json!({"domain": "a.com"});
    type Case<'a> = (
        &'a str,
        &'a Settings,
        Vec<String>,
        Option<Value>,
        Vec<String>,
        bool,
        Result<(), SkipReason>,
    );
    let cases: Vec<Case> = vec![
        (
            "linked and whitelisted",
            &s,
            vec![],
            Some(linked.clone()),
            ids(&["seg_a"]),
            false,
            Ok(()),
        ),
        (
            "account without closeio/id is not skipped",
            &s,
            vec![],
            Some(unlinked.clone()),
            ids(&["seg_a"]),
            false,
            Ok(()),
        ),
        (
            "no account",
            &s,
            vec![],
            None,
            ids(&["seg_a"]),
            false,
            Err(SkipReason::UserNoAccount),
        ),
        (
            "empty account object",
            &s,
            vec![],
            Some(json!({})),
            ids(&["seg_a"]),
            false,
            Err(SkipReason::UserNoAccount),
        ),
        (
            "account not whitelisted",
            &s,
            vec![],
            Some(linked.clone()),
            ids(&["seg_b"]),
            false,
            Err(SkipReason::UserAccountNotInSegments),
        ),
        (
            "account without identifier",
            &s,
            vec![],
            Some(json!({"name": "A"})),
            ids(&["seg_a"]),
            false,
            Err(SkipReason::UserAccountNoIdentValue {
                attr: "domain".into(),
            }),
        ),
        (
            "account without identifier but linked to its lead",
            &s,
            vec![],
            Some(json!({"name": "A", "closeio/id": "lead_1"})),
            ids(&["seg_a"]),
            false,
            Ok(()),
        ),
        (
            "user whitelist absent: all users pass",
            &s,
            ids(&["other"]),
            Some(linked.clone()),
            ids(&["seg_a"]),
            false,
            Ok(()),
        ),
        (
            "user in whitelisted user segment",
            &s_users,
            ids(&["x", "useg"]),
            Some(linked.clone()),
            ids(&["seg_a"]),
            false,
            Ok(()),
        ),
        (
            "user not in whitelisted user segment",
            &s_users,
            ids(&["x"]),
            Some(linked.clone()),
            ids(&["seg_a"]),
            false,
            Err(SkipReason::UserNotInUserSegments),
        ),
        (
            "empty user whitelist lets nobody through",
            &s_users_empty,
            ids(&["useg"]),
            Some(linked.clone()),
            ids(&["seg_a"]),
            false,
            Err(SkipReason::UserNotInUserSegments),
        ),
        (
            "export bypasses both segment filters",
            &s_users,
            vec![],
            Some(linked.clone()),
            vec![],
            true,
            Ok(()),
        ),
        (
            "export still needs an account",
            &s_users,
            vec![],
            None,
            vec![],
            true,
            Err(SkipReason::UserNoAccount),
        ),
    ];
    for (name, s, user_segments, account, account_segments, is_export, expected) in cases {
        let account = account.map(obj);
        assert_eq!(
            filter_user(
                s,
                &user_segments,
                account.as_ref(),
                &account_segments,
                is_export
            ),
            expected,
            "{name}"
        );
    }
}

// ---------------------------------------------------------------- outgoing bodies

#[test]
fn lead_body_table() {
    let base = json!({"lead_attributes_outbound": [{"hull_field_name": "name", "closeio_field_name": "name"}]});
    let with_status = json!({"lead_status": "stat_potential"});
    let cases: Vec<(&str, Value, Value, bool, Value)> = vec![
        (
            "defaults: name, url, implicit domain→url",
            base.clone(),
            json!({"name": "Madkudu", "domain": "madkudu.com", "closeio/id": "lead_1"}),
            false,
            json!({"name": "Madkudu", "url": "madkudu.com"}),
        ),
        (
            "status only on create",
            with_status.clone(),
            json!({"name": "A", "domain": "a.com"}),
            true,
            json!({"name": "A", "url": "a.com", "status_id": "stat_potential"}),
        ),
        (
            "no status on update",
            with_status.clone(),
            json!({"name": "A", "domain": "a.com"}),
            false,
            json!({"name": "A", "url": "a.com"}),
        ),
        (
            "N/A sends no status on create",
            json!({"lead_status": "N/A"}),
            json!({"name": "A", "domain": "a.com"}),
            true,
            json!({"name": "A", "url": "a.com"}),
        ),
        (
            "hull-default sends no status on create",
            json!({"lead_status": "hull-default"}),
            json!({"name": "A", "domain": "a.com"}),
            true,
            json!({"name": "A", "url": "a.com"}),
        ),
        (
            "null status sends no status (fixed)",
            json!({"lead_status": null}),
            json!({"name": "A", "domain": "a.com"}),
            true,
            json!({"name": "A", "url": "a.com"}),
        ),
        (
            "custom fields as flat keys, values as they are",
            json!({"lead_attributes_outbound": [
                {"hull_field_name": "external_id", "closeio_field_name": "custom.lcf_9TB8"},
                {"hull_field_name": "employees", "closeio_field_name": "custom.lcf_ftes"},
                {"hull_field_name": "tags", "closeio_field_name": "custom.lcf_tags"},
                {"hull_field_name": "paying", "closeio_field_name": "custom.lcf_paying"}
            ]}),
            json!({"name": "A", "domain": "a.com", "external_id": "hull12345678", "employees": 60, "tags": ["x", "y"], "paying": false}),
            false,
            json!({"name": "A", "url": "a.com", "custom.lcf_9TB8": "hull12345678", "custom.lcf_ftes": 60,
                   "custom.lcf_tags": ["x", "y"], "custom.lcf_paying": false}),
        ),
        (
            "identifier mapping is last and overrides a user mapping to url",
            json!({"lead_attributes_outbound": [{"hull_field_name": "website", "closeio_field_name": "url"}]}),
            json!({"name": "A", "domain": "a.com", "website": "https://www.a.com/"}),
            false,
            json!({"name": "A", "url": "a.com"}),
        ),
        (
            "null and missing values are skipped",
            json!({"lead_attributes_outbound": [
                {"hull_field_name": "description", "closeio_field_name": "description"},
                {"hull_field_name": "nope", "closeio_field_name": "custom.lcf_x"}
            ]}),
            json!({"name": "A", "domain": "a.com", "description": null}),
            false,
            json!({"name": "A", "url": "a.com"}),
        ),
        (
            "nested path lookup and exact key preference",
            json!({"lead_attributes_outbound": [
                {"hull_field_name": "clearbit/metrics.employees", "closeio_field_name": "custom.lcf_ftes"},
                {"hull_field_name": "closeio/custom.x", "closeio_field_name": "description"}
            ]}),
            json!({"name": "A", "domain": "a.com", "clearbit/metrics": {"employees": 12},
                   "closeio/custom.x": "flat", "closeio/custom": {"x": "nested"}}),
            false,
            json!({"name": "A", "url": "a.com", "custom.lcf_ftes": 12, "description": "flat"}),
        ),
        (
            "external_id identifier into a custom field",
            json!({"lead_identifier_hull": "external_id", "lead_identifier_service": "custom.lcf_ext"}),
            json!({"name": "A", "domain": "a.com", "external_id": "e-1"}),
            false,
            json!({"name": "A", "url": "a.com", "custom.lcf_ext": "e-1"}),
        ),
        (
            "undefined name and domain are left out, null is sent",
            json!({}),
            json!({"name": null, "external_id": "x"}),
            false,
            json!({"name": null}),
        ),
        (
            "no id in the body",
            json!({}),
            json!({"name": "A", "domain": "a.com", "closeio/id": "lead_1", "id": "hull_1"}),
            false,
            json!({"name": "A", "url": "a.com"}),
        ),
    ];
    for (name, s, account, create, expected) in cases {
        let body = lead_body(&settings(s), &obj(account), create);
        assert_eq!(Value::Object(body.clone()), expected, "{name}");
        if name.starts_with("defaults") {
            let keys: Vec<&str> = body.keys().map(String::as_str).collect();
            assert_eq!(keys, ["name", "url"], "key order");
        }
    }
}

#[test]
fn contact_body_table() {
    let cases: Vec<(&str, Value, Value, Value)> = vec![
        (
            "name and lead_id only by default (email is not automatic)",
            json!({}),
            json!({"name": "Gob Bluth", "email": "gob@bluth.com", "traits_closeio/id": "cont_1"}),
            json!({"name": "Gob Bluth", "lead_id": "lead_1"}),
        ),
        (
            "typed lists accumulate in mapping order",
            json!({"contact_attributes_outbound": [
                {"hull_field_name": "email", "closeio_field_name": "emails.office"},
                {"hull_field_name": "traits_phone", "closeio_field_name": "phones.mobile"},
                {"hull_field_name": "traits_personal_email", "closeio_field_name": "emails.home"},
                {"hull_field_name": "traits_site", "closeio_field_name": "urls.url"},
                {"hull_field_name": "traits_fax", "closeio_field_name": "phones.fax"}
            ]}),
            json!({"name": "Gob", "email": "gob@bluth.com", "traits_phone": "+15550100",
                   "traits_personal_email": "gob@home.com", "traits_site": "https://gob.com", "traits_fax": "+15550199"}),
            json!({"name": "Gob", "lead_id": "lead_1",
                   "emails": [{"type": "office", "email": "gob@bluth.com"}, {"type": "home", "email": "gob@home.com"}],
                   "phones": [{"type": "mobile", "phone": "+15550100"}, {"type": "fax", "phone": "+15550199"}],
                   "urls": [{"type": "url", "url": "https://gob.com"}]}),
        ),
        (
            "mapping to name overrides the automatic name; traits_ lookups",
            json!({"contact_attributes_outbound": [
                {"hull_field_name": "traits_closeio/title", "closeio_field_name": "title"},
                {"hull_field_name": "traits_full_name", "closeio_field_name": "name"}
            ]}),
            json!({"name": "Gob", "traits_closeio/title": "Magician", "traits_full_name": "George Oscar Bluth"}),
            json!({"name": "George Oscar Bluth", "lead_id": "lead_1", "title": "Magician"}),
        ),
        (
            "null and missing values skipped",
            json!({"contact_attributes_outbound": [
                {"hull_field_name": "email", "closeio_field_name": "emails.office"},
                {"hull_field_name": "traits_title", "closeio_field_name": "title"}
            ]}),
            json!({"name": "Gob", "email": null}),
            json!({"name": "Gob", "lead_id": "lead_1"}),
        ),
        (
            "user without name",
            json!({}),
            json!({"email": "x@y.z"}),
            json!({"lead_id": "lead_1"}),
        ),
    ];
    for (name, s, user, expected) in cases {
        let body = contact_body(&settings(s), &obj(user), "lead_1");
        assert_eq!(Value::Object(body), expected, "{name}");
    }
}

#[test]
fn contact_lookup_email_table() {
    let cases = [
        (json!({"email": "a@x.com"}), json!({}), Some("a@x.com")),
        (
            json!({"email": "a@x.com"}),
            json!({"emails": [{"type": "office", "email": "b@x.com"}]}),
            Some("a@x.com"),
        ),
        (
            json!({"email": null}),
            json!({"emails": [{"type": "office", "email": "b@x.com"}, {"type": "home", "email": "c@x.com"}]}),
            Some("b@x.com"),
        ),
        (
            json!({"email": ""}),
            json!({"emails": [{"type": "home", "email": "c@x.com"}]}),
            Some("c@x.com"),
        ),
        (json!({}), json!({"emails": []}), None),
        (json!({}), json!({}), None),
    ];
    for (user, body, expected) in cases {
        assert_eq!(
            contact_lookup_email(&obj(user.clone()), &obj(body.clone())).as_deref(),
            expected,
            "{user} {body}"
        );
    }
}

// ---------------------------------------------------------------- incoming traits

fn lead_fixture() -> Value {
    json!({
        "id": "lead_abc",
        "name": "Bluth Company",
        "url": "https://www.Bluth.com/home",
        "description": "Banana stands",
        "status_id": "stat_potential",
        "status_label": "Ignored label",
        "custom.lcf_ftes": 60,
        "custom.lcf_users": 12.5,
        "custom.lcf_receipt": "yes",
        "custom.lcf_abcXYZ": "unknown field",
        "custom": {"FTEs": 60},
        "addresses": [
            {"label": "business", "address_1": "747 Howard St", "city": "Berlin", "state": ""},
            {"label": "business", "city": "Ignored"},
            {"address_1": "No label St", "city": "Paris"},
            {"label": null, "city": "Nowhere"},
            {"label": "mailing", "zipcode": "94103", "country": "US"}
        ],
        "opportunities": [{"id": "oppo_1", "value": 100}],
        "date_created": "2024-01-01T12:00:00.000000+00:00",
        "date_updated": "2024-01-02T08:00:00.123000+00:00"
    })
}

#[test]
fn lead_traits_table() {
    let m = meta();
    let cases: Vec<(&str, Value, Value, Value)> = vec![
        (
            "defaults: url, id, created_at, updated_at and no name",
            json!({}),
            lead_fixture(),
            json!({
                "closeio/url": set(json!("https://www.Bluth.com/home")),
                "closeio/id": set(json!("lead_abc")),
                "closeio/created_at": set_if_null(json!("2024-01-01T12:00:00.000000+00:00")),
                "closeio/updated_at": set(json!("2024-01-02T08:00:00.123000+00:00"))
            }),
        ),
        (
            "name, description, status label, custom fields through snake_case",
            json!({"lead_attributes_inbound": ["name", "description", "status_id", "custom.lcf_ftes",
                   "custom.lcf_users", "custom.lcf_receipt", "custom.lcf_abcXYZ", "custom.lcf_missing", "opportunities"]}),
            lead_fixture(),
            json!({
                "closeio/name": set(json!("Bluth Company")),
                "closeio/description": set(json!("Banana stands")),
                "closeio/status": set(json!("Potential")),
                "closeio/ft_es": set(json!(60)),
                "closeio/of_users": set(json!(12.5)),
                "closeio/e_receipt": set(json!("yes")),
                "closeio/custom_lcf_abc_xyz": set(json!("unknown field")),
                "closeio/url": set(json!("https://www.Bluth.com/home")),
                "closeio/id": set(json!("lead_abc")),
                "name": set_if_null(json!("Bluth Company")),
                "closeio/created_at": set_if_null(json!("2024-01-01T12:00:00.000000+00:00")),
                "closeio/updated_at": set(json!("2024-01-02T08:00:00.123000+00:00"))
            }),
        ),
        (
            "addresses: first per label, missing label is office, null label is null",
            json!({"lead_attributes_inbound": ["addresses"], "lead_identifier_service": null}),
            lead_fixture(),
            json!({
                "closeio/address_business_address_1": set(json!("747 Howard St")),
                "closeio/address_business_city": set(json!("Berlin")),
                "closeio/address_business_state": set(json!("")),
                "closeio/address_office_address_1": set(json!("No label St")),
                "closeio/address_office_city": set(json!("Paris")),
                "closeio/address_null_city": set(json!("Nowhere")),
                "closeio/address_mailing_zipcode": set(json!("94103")),
                "closeio/address_mailing_country": set(json!("US")),
                "closeio/id": set(json!("lead_abc")),
                "closeio/created_at": set_if_null(json!("2024-01-01T12:00:00.000000+00:00")),
                "closeio/updated_at": set(json!("2024-01-02T08:00:00.123000+00:00"))
            }),
        ),
        (
            "unknown status id writes nothing; empty name gives no name trait",
            json!({"lead_attributes_inbound": ["status_id", "name"], "lead_identifier_service": null}),
            json!({"id": "lead_x", "status_id": "stat_unknown", "name": ""}),
            json!({
                "closeio/name": set(json!("")),
                "closeio/id": set(json!("lead_x"))
            }),
        ),
        (
            "missing status, null values and missing dates",
            json!({"lead_attributes_inbound": ["status_id", "description"], "lead_identifier_service": null}),
            json!({"id": "lead_x", "description": null}),
            json!({"closeio/id": set(json!("lead_x"))}),
        ),
        ("not an object", json!({}), json!("lead_x"), json!({})),
    ];
    for (name, s, lead, expected) in cases {
        let traits = lead_traits(&settings(s), &m, &lead);
        assert_eq!(Value::Object(traits), expected, "{name}");
    }
}

#[test]
fn contact_traits_table() {
    let m = meta();
    let contact = json!({
        "id": "cont_1",
        "lead_id": "lead_abc",
        "name": "Gob Bluth",
        "title": "Magician",
        "emails": [
            {"type": "office", "email": "gob@bluth.com"},
            {"type": "office", "email": "gob2@bluth.com"},
            {"email": "untyped@bluth.com"}
        ],
        "phones": [{"type": "mobile", "phone": "+15550100", "phone_formatted": "+1 555-0100"}, {"type": "office", "phone": "+15550101"}],
        "urls": [{"type": "url", "url": "https://gob.com"}],
        "custom.ccf_ok": "Yes"
    });
    let cases: Vec<(&str, Value, Value, Value)> = vec![
        (
            "defaults: id and lead_id only",
            json!({}),
            contact.clone(),
            json!({
                "closeio/id": set(json!("cont_1")),
                "closeio/lead_id": set(json!("lead_abc"))
            }),
        ),
        (
            "typed lists flattened, last of a type wins, missing type is undefined",
            json!({"contact_attributes_inbound": ["name", "title", "emails", "phones", "urls", "custom.ccf_ok"]}),
            contact.clone(),
            json!({
                "closeio/name": set(json!("Gob Bluth")),
                "closeio/title": set(json!("Magician")),
                "closeio/email_office": set(json!("gob2@bluth.com")),
                "closeio/email_undefined": set(json!("untyped@bluth.com")),
                "closeio/phone_mobile": set(json!("+15550100")),
                "closeio/phone_office": set(json!("+15550101")),
                "closeio/url_url": set(json!("https://gob.com")),
                "closeio/contact_ok": set(json!("Yes")),
                "closeio/id": set(json!("cont_1")),
                "name": set_if_null(json!("Gob Bluth")),
                "closeio/lead_id": set(json!("lead_abc"))
            }),
        ),
        (
            "lead_id always written",
            json!({"contact_attributes_inbound": ["emails"]}),
            json!({"id": "cont_2", "emails": []}),
            json!({
                "closeio/id": set(json!("cont_2")),
                "closeio/lead_id": set(Value::Null)
            }),
        ),
    ];
    for (name, s, contact, expected) in cases {
        let traits = contact_traits(&settings(s), &m, &contact);
        assert_eq!(Value::Object(traits), expected, "{name}");
    }
}

// ---------------------------------------------------------------- identity claims

#[test]
fn normalize_url_table() {
    let cases = [
        ("http://medici.com", "medici.com"),
        ("https://www.Medici.com/path?x=1", "www.medici.com"),
        ("medici.com", "medici.com"),
        ("www.medici.com", "www.medici.com"),
        ("HTTPS://SHOUT.IO", "shout.io"),
        ("http://medici.com:8080/x", "medici.com"),
        ("https://user:pw@Sub.Example.org", "sub.example.org"),
        ("", ""),
        ("not a url", "not a url"),
        ("mailto:a@b.com", ""),
        ("www.medici.com:8080", ""),
        ("http://[::1]/", "[::1]"),
        ("http://bücher.de", "xn--bcher-kva.de"),
    ];
    for (input, expected) in cases {
        assert_eq!(normalize_url(input), expected, "{input:?}");
    }
}

#[test]
fn account_claims_table() {
    let cases: Vec<(&str, Value, Value, Value)> = vec![
        (
            "domain from url, normalised",
            json!({}),
            json!({"id": "lead_1", "url": "https://www.Medici.com/path?x=1"}),
            json!({"domain": "www.medici.com", "anonymous_id": "closeio:lead_1"}),
        ),
        (
            "bare domain unchanged",
            json!({}),
            json!({"id": "lead_1", "url": "medici.com"}),
            json!({"domain": "medici.com", "anonymous_id": "closeio:lead_1"}),
        ),
        (
            "null url: anonymous id only",
            json!({}),
            json!({"id": "lead_1", "url": null}),
            json!({"anonymous_id": "closeio:lead_1"}),
        ),
        (
            "non-string identifier value: no domain",
            json!({"lead_identifier_service": "custom.lcf_n"}),
            json!({"id": "lead_1", "custom.lcf_n": 5}),
            json!({"anonymous_id": "closeio:lead_1"}),
        ),
        (
            "external_id raw plus domain from url",
            json!({"lead_identifier_hull": "external_id", "lead_identifier_service": "custom.lcf_ext"}),
            json!({"id": "lead_2", "url": "http://medici.com", "custom.lcf_ext": 1234}),
            json!({"external_id": 1234, "domain": "medici.com", "anonymous_id": "closeio:lead_2"}),
        ),
        (
            "external_id missing: domain and anonymous id",
            json!({"lead_identifier_hull": "external_id", "lead_identifier_service": "custom.lcf_ext"}),
            json!({"id": "lead_2", "url": "medici.com"}),
            json!({"domain": "medici.com", "anonymous_id": "closeio:lead_2"}),
        ),
        (
            "empty url is not claimed",
            json!({}),
            json!({"id": "lead_3", "url": ""}),
            json!({"anonymous_id": "closeio:lead_3"}),
        ),
    ];
    for (name, s, lead, expected) in cases {
        assert_eq!(
            Value::Object(account_claims(&settings(s), &lead)),
            expected,
            "{name}"
        );
    }
}

#[test]
fn user_claims_table() {
    let cases = [
        (
            json!({"id": "cont_1", "emails": [{"type": "home", "email": "Gob@Bluth.com"}, {"type": "office", "email": "o@b.com"}]}),
            json!({"email": "Gob@Bluth.com", "anonymous_id": "closeio:cont_1"}),
        ),
        (
            json!({"id": "cont_2", "emails": []}),
            json!({"anonymous_id": "closeio:cont_2"}),
        ),
        (
            json!({"id": "cont_3"}),
            json!({"anonymous_id": "closeio:cont_3"}),
        ),
        (json!(null), json!({})),
    ];
    for (contact, expected) in cases {
        assert_eq!(Value::Object(user_claims(&contact)), expected, "{contact}");
    }
}

// ---------------------------------------------------------------- opportunities, deletions

#[test]
fn opportunity_traits_table() {
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "sums by status type, latest by date_updated",
            json!({"opportunities": [
                {"status_type": "active", "value": 10000, "value_currency": "USD", "status_label": "Active",
                 "date_updated": "2024-01-02T00:00:00+00:00"},
                {"status_type": "won", "value": 5000, "value_currency": "EUR", "status_label": "Won",
                 "date_updated": "2024-03-01T00:00:00+00:00"},
                {"status_type": "active", "value": 2500, "value_currency": "USD", "status_label": "Demo",
                 "date_updated": "2024-02-01T00:00:00+00:00"},
                {"status_type": "lost", "value": 999, "value_currency": "USD", "status_label": "Lost",
                 "date_updated": "2023-01-01T00:00:00+00:00"},
                {"status_type": "active", "value": null, "status_label": "No value",
                 "date_updated": "2022-01-01T00:00:00+00:00"}
            ]}),
            json!({
                "closeio/opportunities_count": set(json!(5)),
                "closeio/opportunities_open_value": set(json!(12500)),
                "closeio/opportunities_won_value": set(json!(5000)),
                "closeio/opportunities_currency": set(json!("EUR")),
                "closeio/last_opportunity_status": set(json!("Won"))
            }),
        ),
        (
            "no opportunities resets the summary",
            json!({"opportunities": []}),
            json!({
                "closeio/opportunities_count": set(json!(0)),
                "closeio/opportunities_open_value": set(json!(0)),
                "closeio/opportunities_won_value": set(json!(0)),
                "closeio/opportunities_currency": set(Value::Null),
                "closeio/last_opportunity_status": set(Value::Null)
            }),
        ),
        (
            "fractional values sum as floats",
            json!({"opportunities": [
                {"status_type": "won", "value": 1, "date_updated": "2024-01-01"},
                {"status_type": "won", "value": 0.5, "date_updated": "2024-01-01"}
            ]}),
            json!({
                "closeio/opportunities_count": set(json!(2)),
                "closeio/opportunities_open_value": set(json!(0)),
                "closeio/opportunities_won_value": set(json!(1.5)),
                "closeio/opportunities_currency": set(Value::Null),
                "closeio/last_opportunity_status": set(Value::Null)
            }),
        ),
        (
            "lead without an opportunities list gives nothing",
            json!({"id": "lead_1"}),
            json!({}),
        ),
    ];
    for (name, lead, expected) in cases {
        assert_eq!(Value::Object(opportunity_traits(&lead)), expected, "{name}");
    }
}

#[test]
fn deletion_and_merge_traits() {
    let at = "2024-05-01T10:00:00.000000+00:00";
    assert_eq!(
        Value::Object(deleted_traits(at)),
        json!({"closeio/deleted_at": set(json!(at))})
    );
    assert_eq!(
        Value::Object(merged_traits("lead_dest", at)),
        json!({"closeio/merged_into": set(json!("lead_dest")), "closeio/deleted_at": set(json!(at))})
    );
}

// ---------------------------------------------------------------- echo guards

#[test]
fn changes_only_closeio_table() {
    let cases: Vec<(&str, Option<Value>, bool)> = vec![
        ("absent", None, false),
        ("not an object", Some(json!([])), false),
        ("empty", Some(json!({})), false),
        (
            "only empty sections",
            Some(
                json!({"is_new": false, "user": {}, "account": {}, "segments": {}, "account_segments": {}}),
            ),
            false,
        ),
        (
            "account closeio attributes only",
            Some(
                json!({"is_new": false, "account": {"closeio/updated_at": ["a", "b"], "closeio/id": [null, "lead_1"]}, "account_segments": {}}),
            ),
            true,
        ),
        (
            "user traits_closeio attributes only",
            Some(
                json!({"is_new": false, "user": {"traits_closeio/title": ["A", "B"]}, "account": {}, "segments": {}}),
            ),
            true,
        ),
        (
            "user closeio attributes without prefix",
            Some(json!({"user": {"closeio/lead_id": [null, "lead_1"]}})),
            true,
        ),
        (
            "closeio anonymous id added",
            Some(
                json!({"user": {"traits_closeio/id": [null, "cont_1"], "anonymous_ids[1]": [null, "closeio:cont_1"]}}),
            ),
            true,
        ),
        (
            "other anonymous id added",
            Some(json!({"user": {"anonymous_ids[1]": [null, "outreach:1"]}})),
            false,
        ),
        (
            "a non-closeio attribute changed",
            Some(json!({"account": {"closeio/updated_at": ["a", "b"], "name": ["A", "B"]}})),
            false,
        ),
        (
            "a user trait named like closeio but in another group",
            Some(json!({"user": {"traits_closeio_score": [1, 2]}})),
            false,
        ),
        (
            "account key with traits_ prefix is not ours",
            Some(json!({"account": {"traits_closeio/id": [null, "x"]}})),
            false,
        ),
        (
            "new entity",
            Some(json!({"is_new": true, "account": {"closeio/id": [null, "lead_1"]}})),
            false,
        ),
        (
            "entered a segment",
            Some(
                json!({"account": {"closeio/id": [null, "lead_1"]}, "account_segments": {"entered": [{"id": "s"}]}}),
            ),
            false,
        ),
        (
            "left a user segment",
            Some(
                json!({"user": {"traits_closeio/id": [null, "c"]}, "segments": {"left": [{"id": "s"}], "entered": []}}),
            ),
            false,
        ),
    ];
    for (name, changes, expected) in cases {
        assert_eq!(changes_only_closeio(changes.as_ref()), expected, "{name}");
    }
}

#[test]
fn body_hash_is_stable_and_order_independent() {
    let a = obj(
        json!({"name": "A", "url": "a.com", "emails": [{"type": "office", "email": "x"}], "nested": {"b": 1, "a": 2}}),
    );
    let b = obj(
        json!({"nested": {"a": 2, "b": 1}, "emails": [{"email": "x", "type": "office"}], "url": "a.com", "name": "A"}),
    );
    let hash = body_hash(&a);
    assert_eq!(hash.len(), 64);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(hash, body_hash(&b));
    assert_eq!(hash, body_hash(&a.clone()));

    let different = [
        json!({"name": "B", "url": "a.com", "emails": [{"type": "office", "email": "x"}], "nested": {"b": 1, "a": 2}}),
        json!({"name": "A", "url": "a.com", "emails": [{"type": "office", "email": "x"}], "nested": {"b": 1, "a": 3}}),
        json!({"name": "A", "url": "a.com", "emails": [{"type": "home", "email": "x"}], "nested": {"b": 1, "a": 2}}),
        json!({"name": "A", "url": "a.com", "emails": [], "nested": {"b": 1, "a": 2}}),
        json!({"name": "A", "url": null, "emails": [{"type": "office", "email": "x"}], "nested": {"b": 1, "a": 2}}),
    ];
    for other in different {
        assert_ne!(hash, body_hash(&obj(other.clone())), "{other}");
    }
    // A known value pins the canonical form across releases.
    assert_eq!(
        body_hash(&obj(json!({"b": 1, "a": "x"}))),
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            br#"{"a":"x","b":1}"#
        ))
    );
}
