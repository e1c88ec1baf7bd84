//! Statements prepared once per pooled connection (deadpool's statement cache) instead of at
//! every call: a plain `query(&str)` costs a Parse round trip (and Postgres's parse and plan)
//! before every execution. Every statement of the store goes through these.

use std::future::Future;

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, Row};

/// The parameters of a statement.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// `query`, `query_one`, `query_opt` and `execute` with a cached prepared statement.
pub(crate) trait Prepared: GenericClient {
    fn query_p<'a>(
        &'a self,
        sql: &'a str,
        params: Params<'a>,
    ) -> impl Future<Output = Result<Vec<Row>, Error>> + Send + 'a {
        async move {
            let st = self.prepare_cached(sql).await?;
            self.query(&st, params).await
        }
    }

    fn query_one_p<'a>(
        &'a self,
        sql: &'a str,
        params: Params<'a>,
    ) -> impl Future<Output = Result<Row, Error>> + Send + 'a {
        async move {
            let st = self.prepare_cached(sql).await?;
            self.query_one(&st, params).await
        }
    }

    fn query_opt_p<'a>(
        &'a self,
        sql: &'a str,
        params: Params<'a>,
    ) -> impl Future<Output = Result<Option<Row>, Error>> + Send + 'a {
        async move {
            let st = self.prepare_cached(sql).await?;
            self.query_opt(&st, params).await
        }
    }

    fn execute_p<'a>(
        &'a self,
        sql: &'a str,
        params: Params<'a>,
    ) -> impl Future<Output = Result<u64, Error>> + Send + 'a {
        async move {
            let st = self.prepare_cached(sql).await?;
            self.execute(&st, params).await
        }
    }
}

impl<T: GenericClient + ?Sized> Prepared for T {}
