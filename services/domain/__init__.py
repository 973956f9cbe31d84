"""A domain: the events, features, rules, labels and topics one deployment scores, declared in a
folder (docs/adapting.md)."""
