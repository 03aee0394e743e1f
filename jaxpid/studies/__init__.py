"""The papers' studies on your own data and model: localization, prompt intervention,
compositional retrieval, word relations, and the measures' validation on known structure.

Each study is a job table, a per-batch computation on the sweep machinery (fixed batches of
one shape, the atomic and resumable store, the local / multi-host / Ray runners) and a summary
written through ``jaxpid.io`` (docs/architecture.md#adding-a-study). The study issues fill this
package.
"""
