"""Everything that writes files: atomic writes, result folders, report folders, figures, provenance.

No other part of jaxpid opens a file for writing; they hand bytes, records or figures to this
package. It imports nothing of jaxpid but the core's constants and the errors. Import the
module you need (``from jaxpid.io.results import save_pid``): this package file imports none of
them, so code that only needs atomic writes does not load matplotlib.

    atomic       files and folders written whole or not at all; PNG images
    provenance   environment(): devices, versions, commit; provenance_record() with model and key
    results      jaxpid pid / mi result folders (result.json, maps.npz, images, panel.png)
    reports      bias report folders (CSV tables and figures)
    plots        the figures (returned, not saved)
"""
