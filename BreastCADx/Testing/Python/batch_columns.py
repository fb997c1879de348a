"""The batch results.csv header, spelled out independently of the implementation (an outside contract)."""

EXPECTED_COLUMNS = ["case_id", "status", "error", "error_code", "lesion_found", "malignancy_probability",
                    "predicted_label", "birads_suggestion", "mask_path", "heatmap_path", "seconds", "flags",
                    "presence_score", "reader_birads", "site_profile"]
