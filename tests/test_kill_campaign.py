"""The kill campaign (tests/kill_campaign.py): 20 random SIGKILLs per method, and a short
one as a quick check of the campaign itself. The default run's fast kill tests are in test_runs.py,
test_cyclegan.py and test_ddpm.py. Final weights must equal an uninterrupted run's bit for bit."""
import pytest

from kill_campaign import run_campaign


@pytest.mark.slow
def test_short_kill_campaign_pix2pix(tmp_path):
    result = run_campaign("pix2pix", kills=2, workdir=tmp_path, seed=1)
    assert result["kills"] == 2 and result["identical"] and result["export_whole"]


@pytest.mark.slow
def test_short_kill_campaign_two_processes_sync_batch(tmp_path):
    """2 processes (torchrun) with model.norm=sync_batch: every rank killed, or the launcher and its
    workers SIGKILLed from outside; resumes equal the uninterrupted 2-process run bit for bit."""
    result = run_campaign("pix2pix-sync_batch", kills=2, workdir=tmp_path, seed=1)
    assert result["kills"] == 2 and result["identical"] and result["export_whole"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pix2pix", "pix2pix-augment-ema", "cyclegan", "cut", "fastcut", "ddpm",
                                    "ddpm-snr", "ddpm-edm", "colorization", "colorization-gan",
                                    "pix2pix-sync_batch"])
def test_twenty_kills(tmp_path, method):
    result = run_campaign(method, kills=20, workdir=tmp_path, seed=0)
    assert result["kills"] == 20 and result["identical"] and result["export_whole"]
