//! What ragbox sends to Qdrant's REST API and reads back, as plain functions over JSON,
//! so that every body's shape is tested without a server. The tenant condition of every
//! filter is written by [`filter`] alone: a body that reads, counts or deletes points
//! takes its filter from there, so no call can leave the tenant out.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::super::{Hit, VectorError, VectorItem};
use crate::domain::TenantId;

/// The payload field naming a point's tenant (indexed with `is_tenant`).
pub(super) const TENANT: &str = "tenant";
/// The payload field naming a point's document.
pub(super) const DOCUMENT: &str = "document";

/// Which of a tenant's documents a filter covers.
#[derive(Debug, Clone, Copy)]
pub(super) enum Documents<'a> {
    /// All of them.
    All,
    /// One.
    One(&'a str),
    /// Any of these (never empty: an empty set matches nothing, and callers answer
    /// that without asking Qdrant).
    Any(&'a HashSet<String>),
}

/// The filter of every call on a tenant's points: the tenant always; the documents when
/// narrowed; and, when `except` is not empty, not those point ids.
pub(super) fn filter(tenant: &TenantId, documents: Documents<'_>, except: &[u64]) -> Value {
    let mut must = vec![json!({"key": TENANT, "match": {"value": tenant.as_str()}})];
    match documents {
        Documents::All => {}
        Documents::One(document) => {
            must.push(json!({"key": DOCUMENT, "match": {"value": document}}));
        }
        Documents::Any(documents) => {
            let mut any: Vec<&str> = documents.iter().map(String::as_str).collect();
            any.sort_unstable();
            must.push(json!({"key": DOCUMENT, "match": {"any": any}}));
        }
    }
    let mut filter = json!({ "must": must });
    if !except.is_empty() {
        filter["must_not"] = json!([{ "has_id": except }]);
    }
    filter
}

/// `PUT /collections/{c}`: one unnamed vector per point, compared by cosine.
pub(super) fn create_collection(dim: usize) -> Value {
    json!({
        "vectors": {"size": dim, "distance": "Cosine"},
        "on_disk_payload": true,
    })
}

/// `PUT /collections/{c}/index`: a keyword index; the tenant's with `is_tenant`, so that
/// Qdrant stores each tenant's points together.
pub(super) fn keyword_index(field: &str) -> Value {
    let mut schema = json!({"type": "keyword"});
    if field == TENANT {
        schema["is_tenant"] = json!(true);
    }
    json!({"field_name": field, "field_schema": schema})
}

/// `PUT /collections/{c}/points`: a document's vectors, each with its tenant and
/// document in the payload.
pub(super) fn upsert(tenant: &TenantId, document: &str, items: &[VectorItem]) -> Value {
    let points: Vec<Value> = items
        .iter()
        .map(|item| {
            json!({
                "id": item.id,
                "vector": item.vector,
                "payload": {TENANT: tenant.as_str(), DOCUMENT: document},
            })
        })
        .collect();
    json!({ "points": points })
}

/// `POST /collections/{c}/points/delete`, `…/points/count`: the points a filter selects.
pub(super) fn by_filter(filter: Value) -> Value {
    json!({ "filter": filter })
}

/// `POST /collections/{c}/points/count`: an exact count.
pub(super) fn count(filter: Value) -> Value {
    json!({ "filter": filter, "exact": true })
}

/// `POST /collections/{c}/points/query`: the `k` nearest points, ids and scores only.
pub(super) fn query(vector: &[f32], k: usize, filter: Value) -> Value {
    json!({
        "query": vector,
        "limit": k,
        "filter": filter,
        "with_payload": false,
        "with_vector": false,
    })
}

/// `POST /collections/{c}/facet`: the distinct values of a keyword field, up to
/// `limit`, among the points `filter` selects (all points when `None`).
pub(super) fn facet(key: &str, filter: Option<Value>, limit: usize) -> Value {
    let mut body = json!({"key": key, "limit": limit, "exact": false});
    if let Some(filter) = filter {
        body["filter"] = filter;
    }
    body
}

/// `POST /collections/{c}/points/scroll`: a page of points with their vector and
/// document, from `offset` on.
pub(super) fn scroll(filter: Value, offset: Option<u64>, limit: usize) -> Value {
    let mut body = json!({
        "filter": filter,
        "limit": limit,
        "with_payload": [DOCUMENT],
        "with_vector": true,
    });
    if let Some(offset) = offset {
        body["offset"] = json!(offset);
    }
    body
}

fn malformed(what: &str) -> VectorError {
    VectorError::Storage(format!("Qdrant answered an unexpected {what}"))
}

/// The hits of a query answer (`{"points": [{"id", "score"}]}`).
pub(super) fn hits(result: &Value) -> Result<Vec<Hit>, VectorError> {
    let points = result["points"]
        .as_array()
        .ok_or_else(|| malformed("query result"))?;
    points
        .iter()
        .map(|p| {
            let id = p["id"].as_u64().ok_or_else(|| malformed("point id"))?;
            let score = p["score"].as_f64().ok_or_else(|| malformed("score"))?;
            Ok(Hit {
                id,
                score: score as f32,
            })
        })
        .collect()
}

/// The number in a count answer (`{"count": n}`).
pub(super) fn counted(result: &Value) -> Result<usize, VectorError> {
    result["count"]
        .as_u64()
        .map(|n| n as usize)
        .ok_or_else(|| malformed("count"))
}

/// The values of a facet answer (`{"hits": [{"value", "count"}]}`).
pub(super) fn facet_values(result: &Value) -> Result<Vec<String>, VectorError> {
    let hits = result["hits"]
        .as_array()
        .ok_or_else(|| malformed("facet result"))?;
    Ok(hits
        .iter()
        .filter_map(|h| h["value"].as_str().map(str::to_owned))
        .collect())
}

/// A page of a scroll answer: each point's document and vector, and where the next
/// page starts (`None` after the last).
pub(super) type Page = (Vec<(String, VectorItem)>, Option<u64>);

/// Reads a scroll answer (`{"points": [{"id", "payload", "vector"}], "next_page_offset"}`).
pub(super) fn page(result: &Value) -> Result<Page, VectorError> {
    let points = result["points"]
        .as_array()
        .ok_or_else(|| malformed("scroll result"))?;
    let mut items = Vec::with_capacity(points.len());
    for p in points {
        let id = p["id"].as_u64().ok_or_else(|| malformed("point id"))?;
        let document = p["payload"][DOCUMENT]
            .as_str()
            .ok_or_else(|| malformed("point payload"))?;
        let vector = p["vector"]
            .as_array()
            .ok_or_else(|| malformed("point vector"))?
            .iter()
            .map(|x| x.as_f64().map(|x| x as f32))
            .collect::<Option<Vec<f32>>>()
            .ok_or_else(|| malformed("point vector"))?;
        items.push((document.to_owned(), VectorItem { id, vector }));
    }
    Ok((items, result["next_page_offset"].as_u64()))
}

/// Checks an existing collection's vectors against what ragbox stores: one unnamed
/// vector of `dim` floats, compared by cosine.
pub(super) fn check_collection(info: &Value, dim: usize) -> Result<(), String> {
    let vectors = &info["config"]["params"]["vectors"];
    let size = vectors["size"].as_u64();
    let distance = vectors["distance"].as_str();
    match (size, distance) {
        (Some(size), Some("Cosine")) if size == dim as u64 => Ok(()),
        (Some(size), Some(distance)) => Err(format!(
            "holds {size}-d vectors by {distance} distance; ragbox stores {dim}-d vectors by Cosine"
        )),
        _ => Err(
            "has named vectors or an unknown layout; ragbox needs one unnamed vector per point"
                .into(),
        ),
    }
}

/// The payload fields of an existing collection that have no index yet.
pub(super) fn missing_indexes(info: &Value) -> Vec<&'static str> {
    [TENANT, DOCUMENT]
        .into_iter()
        .filter(|f| info["payload_schema"].get(*f).is_none())
        .collect()
}

/// Qdrant's reason in an error answer (`{"status": {"error": "…"}}`), else the body.
pub(super) fn error_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["status"]["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantId {
        TenantId::parse("0190c1d2-0000-7000-8000-000000000001").unwrap()
    }

    /// The tenant conditions of a filter.
    fn tenant_conditions(filter: &Value) -> Vec<&Value> {
        filter["must"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["key"] == TENANT)
            .collect()
    }

    #[test]
    fn every_filter_names_the_tenant_exactly_once() {
        let t = tenant();
        let docs: HashSet<String> = ["b".to_owned(), "a".to_owned()].into();
        for scope in [Documents::All, Documents::One("d"), Documents::Any(&docs)] {
            for except in [&[][..], &[7, 9][..]] {
                let f = filter(&t, scope, except);
                let conditions = tenant_conditions(&f);
                assert_eq!(conditions.len(), 1, "{f}");
                assert_eq!(conditions[0]["match"]["value"], t.as_str(), "{f}");
            }
        }
    }

    #[test]
    fn a_document_filter_narrows_within_the_tenant() {
        let t = tenant();
        let f = filter(&t, Documents::One("doc-1"), &[]);
        assert_eq!(
            f,
            json!({"must": [
                {"key": "tenant", "match": {"value": t.as_str()}},
                {"key": "document", "match": {"value": "doc-1"}},
            ]})
        );
        let docs: HashSet<String> = ["b".to_owned(), "a".to_owned()].into();
        let f = filter(&t, Documents::Any(&docs), &[]);
        assert_eq!(
            f["must"][1],
            json!({"key": "document", "match": {"any": ["a", "b"]}})
        );
        assert!(f.get("must_not").is_none());
    }

    #[test]
    fn kept_ids_are_excluded_by_must_not() {
        let f = filter(&tenant(), Documents::One("d"), &[3, 4]);
        assert_eq!(f["must_not"], json!([{"has_id": [3, 4]}]));
    }

    #[test]
    fn every_body_that_selects_points_carries_the_filter() {
        let t = tenant();
        let f = filter(&t, Documents::All, &[]);
        for body in [
            by_filter(f.clone()),
            count(f.clone()),
            query(&[0.5; 4], 3, f.clone()),
            scroll(f.clone(), Some(10), 256),
            facet(DOCUMENT, Some(f.clone()), 100),
        ] {
            assert_eq!(tenant_conditions(&body["filter"]).len(), 1, "{body}");
        }
        assert_eq!(count(f.clone())["exact"], true);
    }

    #[test]
    fn points_carry_tenant_and_document() {
        let t = tenant();
        let items = vec![
            VectorItem {
                id: 1,
                vector: vec![0.0, 1.0],
            },
            VectorItem {
                id: u64::MAX,
                vector: vec![1.0, 0.0],
            },
        ];
        let body = upsert(&t, "doc", &items);
        assert_eq!(
            body["points"][1],
            json!({"id": u64::MAX, "vector": [1.0, 0.0], "payload": {"tenant": t.as_str(), "document": "doc"}})
        );
    }

    #[test]
    fn a_query_asks_for_ids_and_scores_only() {
        let body = query(&[1.0, 0.0], 5, json!({}));
        assert_eq!(body["limit"], 5);
        assert_eq!(body["query"], json!([1.0, 0.0]));
        assert_eq!(body["with_payload"], false);
        assert_eq!(body["with_vector"], false);
    }

    #[test]
    fn the_collection_and_its_indexes() {
        assert_eq!(
            create_collection(384)["vectors"],
            json!({"size": 384, "distance": "Cosine"})
        );
        assert_eq!(
            keyword_index(TENANT),
            json!({"field_name": "tenant", "field_schema": {"type": "keyword", "is_tenant": true}})
        );
        assert_eq!(
            keyword_index(DOCUMENT),
            json!({"field_name": "document", "field_schema": {"type": "keyword"}})
        );
    }

    #[test]
    fn answers_are_read() {
        let hit = hits(&json!({"points": [{"id": 4, "version": 1, "score": 0.75}]})).unwrap();
        assert_eq!(hit, vec![Hit { id: 4, score: 0.75 }]);
        assert!(hits(&json!({"points": [{"id": "uuid-like", "score": 1.0}]})).is_err());
        assert_eq!(counted(&json!({"count": 12})).unwrap(), 12);
        assert_eq!(
            facet_values(
                &json!({"hits": [{"value": "a", "count": 2}, {"value": "b", "count": 1}]})
            )
            .unwrap(),
            vec!["a", "b"]
        );
        let (items, next) = page(&json!({
            "points": [{"id": 9, "payload": {"document": "d"}, "vector": [0.5, 0.25]}],
            "next_page_offset": 10,
        }))
        .unwrap();
        assert_eq!(next, Some(10));
        assert_eq!(items[0].0, "d");
        assert_eq!(
            (items[0].1.id, items[0].1.vector.clone()),
            (9, vec![0.5, 0.25])
        );
        let (_, last) = page(&json!({"points": [], "next_page_offset": null})).unwrap();
        assert_eq!(last, None);
    }

    #[test]
    fn a_collection_of_another_shape_is_refused() {
        let info = |size: u64, distance: &str| json!({"config": {"params": {"vectors": {"size": size, "distance": distance}}}});
        assert!(check_collection(&info(384, "Cosine"), 384).is_ok());
        assert!(check_collection(&info(768, "Cosine"), 384).is_err());
        assert!(check_collection(&info(384, "Dot"), 384).is_err());
        let named = json!({"config": {"params": {"vectors": {"text": {"size": 384, "distance": "Cosine"}}}}});
        assert!(check_collection(&named, 384).is_err());
    }

    #[test]
    fn missing_payload_indexes_are_found() {
        let info = json!({"payload_schema": {"tenant": {"data_type": "keyword"}}});
        assert_eq!(missing_indexes(&info), vec![DOCUMENT]);
        assert_eq!(missing_indexes(&json!({})), vec![TENANT, DOCUMENT]);
    }

    #[test]
    fn error_messages_come_from_qdrant_status() {
        assert_eq!(
            error_message(r#"{"status": {"error": "Not found: Collection `x` doesn't exist!"}}"#),
            "Not found: Collection `x` doesn't exist!"
        );
        assert_eq!(error_message("bad gateway"), "bad gateway");
    }
}
