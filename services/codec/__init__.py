"""Avro in the Confluent wire format: schemas, schema ids (manifest or registry), batch serde."""
