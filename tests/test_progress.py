"""Progress lines for logs and CI (``buildings.progress``)."""


def test_slow_progress_says_seconds_per_image_not_zero_images_a_second():
    from buildings.progress import rate

    assert rate(231, 100, "images") == "2.31 images/s"
    assert rate(3, 12.6, "images") == "4.2 s/image"  # 0.24 images/s would print as 0.2, and 0.01 as 0.0
    assert rate(1, 600, "blocks") == "600.0 s/block"
