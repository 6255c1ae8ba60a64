import torch
from PIL import Image

from chromalab.report import Report, image_grid, metrics_table


def test_image_grid_size_and_scale(tmp_path):
    images = torch.rand(6, 3, 8, 10)
    path = image_grid(images, tmp_path / "a" / "grid.png", nrow=3, scale=2)
    width, height = Image.open(path).size
    # 3 columns of 20 px + 4 borders of 2 px; 2 rows of 16 px + 3 borders
    assert (width, height) == (3 * 20 + 4 * 2, 2 * 16 + 3 * 2)


def test_image_grid_resizes_a_list(tmp_path):
    path = image_grid([torch.rand(3, 8, 8), torch.rand(3, 16, 12)], tmp_path / "g.png", nrow=2)
    assert Image.open(path).size == (2 * 8 + 3 * 2, 8 + 2 * 2)


def test_metrics_table_formats_and_escapes():
    table = metrics_table(
        [
            {"method": "<b>", "auc": 0.123456, "n": torch.tensor(3.0)},
            {"method": "gray", "auc": float("nan"), "n": 1},
        ]
    )
    assert "&lt;b&gt;" in table and "0.1235" in table and "—" in table and "<td>3</td>" in table


def test_sections_are_ordered_and_replaced(tmp_path):
    report = Report(tmp_path / "demo")
    report.write_section("second", "Second", "<p>two</p>", order=20)
    report.write_section("first", "First", "<p>old</p>", order=10)
    report.write_section("first", "First", "<p>new</p>", order=10)
    img = image_grid(torch.rand(1, 3, 4, 4), report.asset("x/y.png"), nrow=1)
    report.write_section("third", "Third", report.figure(img, "cap"), order=30)
    html = report.build().read_text()
    assert html.index("First") < html.index("Second") < html.index("Third")
    assert "new" in html and "old" not in html
    assert 'src="assets/x/y.png"' in html
